"""The documentation says what the code does: the generated reference pages are current, and every
console example of README.md and docs/*.md that runs in seconds is run and prints what the page
shows (masked: timings, rates, paths, pids). The convention is in docs/development.md.

Each page's examples run in order in one scratch store, as a reader would type them. A command
sequence that several pages start with (`make demo` ...) runs once: the store it leaves is
copied for the next page, and its output is compared on each page.
"""

from __future__ import annotations

import ast
import importlib
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from typer.testing import CliRunner

from addpatch.caches import CACHE_ENV
from cli.main import app
from docs_tools import examples
from docs_tools.generate import REGENERATE, stale_pages

DUCKDB = str(Path(sys.executable).parent / "duckdb")
PAGES = [page for page in examples.pages() if examples.console_blocks(page)]


def _sequence(page: Path) -> tuple[str, ...]:
    return tuple(
        command.text
        for block in examples.console_blocks(page)
        if not block.long
        for command in block.commands
    )


# a prefix of commands that more than one page runs: its store is kept for the next page
_SHARED = Counter(
    seq[:n] for seq in {_sequence(page) for page in PAGES} for n in range(1, len(seq) + 1)
)
_RAN: dict[tuple[str, ...], tuple[str, int, Path]] = {}


def _run(command: examples.Command, scratch: Path) -> tuple[str, int]:
    """Run one shown command in `scratch` (the reader's directory; the store is
    `scratch/addpatch-store`): `addpatch ...` in-process, `make demo` as `addpatch run`, the
    DuckDB shell as the installed `duckdb` with the `D ` lines as its input."""
    words = shlex.split(command.text)
    cwd = scratch
    if words[:1] == ["cd"] and words[2:3] == ["&&"]:
        cwd, words = scratch / words[1], words[3:]
    if words == ["make", "demo"]:
        result = CliRunner().invoke(app, ["run"])
        return ".venv/bin/addpatch run\n" + result.output, result.exit_code
    if words[:1] == ["addpatch"]:
        result = CliRunner().invoke(app, words[1:])
        return result.output, result.exit_code
    if words[0].endswith("duckdb") and len(words) == 2:
        shell = subprocess.run(
            [DUCKDB, words[1]],
            input="".join(f"{s}\n" for s in command.statements),
            capture_output=True,
            text=True,
            cwd=cwd,
            timeout=120,
        )
        return shell.stdout + shell.stderr, shell.returncode
    raise AssertionError(
        f"{command.line}: `{command.text}` is not a command the example test runs (addpatch, "
        "make demo, the DuckDB shell): mark the block long (see docs/development.md)"
    )


def test_generated_reference_is_current():
    stale = stale_pages()
    assert not stale, f"stale: {', '.join(map(str, stale))}; regenerate with `{REGENERATE}`"


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.name)
def test_console_examples_print_what_the_page_shows(page, tmp_path_factory, monkeypatch):
    scratch = tmp_path_factory.mktemp("reader")
    store = scratch / "addpatch-store"
    (scratch / "queries").symlink_to(examples.ROOT / "queries")
    monkeypatch.chdir(scratch)
    monkeypatch.setenv("ADDPATCH_STORE", str(store))
    monkeypatch.setenv("COLUMNS", "200")
    # one cache for every page (the reports' Vega bundle is built once), not one per test
    monkeypatch.setenv(CACHE_ENV, str(tmp_path_factory.getbasetemp() / "docs-cache"))
    history: tuple[str, ...] = ()
    for block in examples.console_blocks(page):
        if block.long:
            continue
        for command in block.commands:
            history = (*history, command.text)
            if history in _RAN:
                printed, code, kept = _RAN[history]
                shutil.rmtree(store, ignore_errors=True)
                if kept.exists():
                    shutil.copytree(kept, store, symlinks=True)
            else:
                printed, code = _run(command, scratch)
                kept = tmp_path_factory.mktemp("kept") / "store"
                if _SHARED[history] > 1 and store.exists():
                    shutil.copytree(store, kept, symlinks=True)
                _RAN[history] = (printed, code, kept)
            where = f"{page.relative_to(examples.ROOT)}:{command.line}: $ {command.text}"
            shows_error = any(line.startswith("Error:") for line in command.expected)
            assert (code != 0) == shows_error, f"{where}: exit code {code}\n{printed}"
            diff = examples.mismatch(command.expected, printed)
            assert diff is None, f"{where} prints something else than the page shows:\n{diff}"


def test_long_examples_say_when_and_where_they_were_measured():
    for page in examples.pages():
        for block in examples.console_blocks(page):
            if block.long:
                assert examples.MEASURED.search(block.note), (
                    f"{block.where}: the long-example marker must say `measured YYYY-MM-DD on "
                    f"<machine>`, not {block.note!r}"
                )


def test_an_edited_output_line_is_caught():
    """The comparison fails on a changed figure, message or row count, and ignores only what
    varies between runs."""
    printed = (
        "Run 1: 256 examples x 4 layers x 12 positions = 12,288 interventions, 8,627/s\n"
        "│ O_1        │ 0     │ 11       │ ' is'          │ 0.324 │\n"
        "│ O_2        │ —     │ —        │ not localized  │ 0.105 │\n"
        f"Store:  {os.getcwd()}/addpatch-store\n"
        "Done in 8.0 s\n"
    )
    shown = [
        "Run 1: 256 examples x 4 layers x 12 positions = 12,288 interventions, 4,477/s",
        "│ O_1        │ 0     │ 11       │ ' is'          │ 0.324 │",
        "│ O_2        │ —     │ —        │ not localized  │ 0.105 │",
        "Store:  /work/main/addpatch-store",
        "Done in 16.9 s",
    ]
    assert examples.mismatch(shown, printed) is None
    assert examples.mismatch([shown[0], "...", shown[4]], printed) is None
    assert examples.mismatch([shown[0][:20] + "[...]", "...", shown[4]], printed) is None
    edited = [shown[0], shown[1].replace("0.324", "0.325"), *shown[2:]]
    assert "+│ O_1" in (examples.mismatch(edited, printed) or "")
    assert examples.mismatch([*shown[:2], *shown[3:]], printed) is not None  # a row fewer
    assert examples.mismatch([*shown[:4]], printed) is not None
    assert examples.mismatch([shown[0].replace("12,288", "12,289"), *shown[1:]], printed)


def test_console_blocks_are_read_with_their_markers(tmp_path, monkeypatch):
    monkeypatch.setattr(examples, "ROOT", tmp_path)
    page = tmp_path / "page.md"
    page.write_text(
        "Text.\n\n```console\n$ addpatch store path\n/x/addpatch-store\n$ addpatch \\\n"
        "  model list\n...\n```\n\n<!-- example: long, measured 2026-12-06 on a laptop -->\n"
        "```console\n$ python benchmarks/labelling.py\nspeed-up: 5.5x\n```\n\n"
        "```console\n$ cd s && duckdb catalog.duckdb\nD SELECT 1;\n│ 1 │\n```\n",
        encoding="utf-8",
    )
    quick, long, shell = examples.console_blocks(page)
    assert [c.text for c in quick.commands] == ["addpatch store path", "addpatch model list"]
    assert quick.commands[0].expected == ("/x/addpatch-store",)
    assert quick.commands[1].line == 6 and not quick.long
    assert long.long and long.note == "measured 2026-12-06 on a laptop"
    assert shell.commands[0].statements == ("SELECT 1;",)
    assert shell.commands[0].expected == ("│ 1 │",)


def test_readme_links_point_at_files_that_exist():
    """mkdocs checks the links between docs pages; README.md lies outside the site, so its links
    into docs/ are checked here."""
    readme = examples.ROOT / "README.md"
    targets = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", readme.read_text(encoding="utf-8"))
    local = [target for target in targets if "://" not in target]
    assert local, "README.md links nowhere"
    missing = [target for target in local if not (examples.ROOT / target).exists()]
    assert not missing, f"README.md links to missing files: {missing}"


def _python_blocks(page: Path) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", page.read_text(encoding="utf-8"), re.M | re.S)


def test_python_examples_compile_and_name_what_the_library_has():
    """The Python examples are not run (they need a store of their own), but each compiles and
    every name it imports exists: a renamed function or module fails here."""
    checked = 0
    for page in examples.pages():
        for number, code in enumerate(_python_blocks(page), 1):
            where = f"{page.relative_to(examples.ROOT)}, python block {number}"
            tree = ast.parse(code, filename=where)
            for node in ast.walk(tree):
                if isinstance(node, ast.ImportFrom) and node.module:
                    module = importlib.import_module(node.module)
                    for alias in node.names:
                        assert hasattr(module, alias.name), f"{where}: {node.module}.{alias.name}"
                        checked += 1
    assert checked, "no Python example imports anything"
