"""The console examples of README.md and docs/*.md, read so that a test can run them and compare
what they print with what the page shows (the convention is described in docs/development.md).

A console example is a fenced block whose language is `console`. Each line starting with `$ `
is a command (a trailing backslash continues it on the next line); under a command that opens
the DuckDB shell, lines starting with `D ` are the statements typed into it; every other line
is what the commands print. A block preceded by a marker line

    <!-- example: long, measured 2026-12-06 on the 2-core CPU dev machine -->

is shown, not run (it takes minutes, needs Ray, a GPU or real weights); the marker says when and
where its figures were measured.

What varies from run to run is masked on both sides before comparing: timings, rates, absolute
paths and process ids. In the shown output, a line holding only `...` stands for any number of
lines, and `[...]` within a line for any text.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

LONG = re.compile(r"^<!--\s*example:\s*long\b(?P<note>.*?)-->\s*$")
MEASURED = re.compile(r"measured \d{4}-\d{2}-\d{2} on \S")
_FENCE = re.compile(r"^(?P<fence>```+|~~~+)\s*(?P<lang>[\w-]*)")
SKIP_LINES = "..."
SKIP_TEXT = "[...]"

_MASKS = [
    (re.compile(r"(?<![\w/.])/(?:[\w.+@~-]+/?)+"), "<path>"),  # absolute paths
    (re.compile(r"\b\d[\d,]*(?:\.\d+)?/s\b"), "<n>/s"),  # rates: 4,477/s
    (re.compile(r"\b\d+(?:\.\d+)?\s?(?:ms|s|min)\b"), "<t>"),  # durations: 16.9 s
    (re.compile(r"\bpid \d+"), "pid <n>"),
]


@dataclass(frozen=True)
class Command:
    line: int  # 1-based line of the `$ ` line in its page
    text: str  # the command, continuation lines joined
    statements: tuple[str, ...]  # `D ` lines: input to a shell the command opens
    expected: tuple[str, ...]  # what the page shows it prints


@dataclass(frozen=True)
class Block:
    page: Path
    line: int  # 1-based line of the opening fence
    commands: tuple[Command, ...]
    long: bool
    note: str  # the long marker's text (when and where it was measured)

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def pages() -> list[Path]:
    """README.md, then every page under docs/ (new pages are picked up by themselves)."""
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def _commands(lines: list[str], first_line: int) -> tuple[Command, ...]:
    commands: list[Command] = []
    current: list[str] | None = None
    start = 0
    statements: list[str] = []
    expected: list[str] = []

    def close() -> None:
        if current is not None:
            text = " ".join(current)
            commands.append(Command(start, text, tuple(statements), tuple(expected)))

    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("$ "):
            close()
            start, current, statements, expected = first_line + i, [], [], []
            text = line[2:]
            while text.endswith("\\") and i + 1 < len(lines):
                current.append(text[:-1].strip())
                i += 1
                text = lines[i].strip()
            current.append(text.strip())
        elif current is not None and line.startswith("D "):
            statements.append(line[2:])
        elif current is not None:
            expected.append(line)
        i += 1
    close()
    return tuple(commands)


def console_blocks(page: Path) -> list[Block]:
    """The page's console examples, in order."""
    lines = page.read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        fence = _FENCE.match(lines[i])
        if not fence:
            i += 1
            continue
        end = i + 1
        while end < len(lines) and not lines[end].startswith(fence["fence"]):
            end += 1
        if fence["lang"] == "console":
            before = next((text for text in reversed(lines[:i]) if text.strip()), "")
            marker = LONG.match(before.strip())
            blocks.append(
                Block(
                    page,
                    i + 1,
                    _commands(lines[i + 1 : end], i + 2),
                    long=marker is not None,
                    note=marker["note"].strip(" ,") if marker else "",
                )
            )
        i = end + 1
    return blocks


def mask(text: str) -> list[str]:
    """The lines of `text` with timings, rates, absolute paths and pids masked, right-stripped."""
    lines = []
    for line in text.splitlines():
        for pattern, replacement in _MASKS:
            line = pattern.sub(replacement, line)
        lines.append(line.rstrip())
    while lines and not lines[-1]:
        lines.pop()
    return lines


def _pattern(expected: list[str]) -> re.Pattern[str]:
    parts = []
    for line in expected:
        if line.strip() == SKIP_LINES:
            parts.append(r"(?:[^\n]*\n)*?")
        else:
            pieces = [re.escape(piece) for piece in line.split(SKIP_TEXT)]
            parts.append("[^\n]*".join(pieces) + r"\n")
    return re.compile("".join(parts))


def mismatch(expected: tuple[str, ...] | list[str], printed: str) -> str | None:
    """None when `printed` matches the shown output (both masked), else a diff to show."""
    shown = mask("\n".join(expected))
    actual = mask(printed)
    if _pattern(shown).fullmatch("".join(line + "\n" for line in actual)):
        return None
    diff = difflib.unified_diff(shown, actual, "shown on the page", "printed now", lineterm="")
    return "\n".join(diff)
