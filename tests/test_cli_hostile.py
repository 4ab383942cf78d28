"""Every option of every command, given hostile values: one `Error:` line, a non-zero exit, no
traceback, and the store byte-for-byte unchanged.

The commands and options are walked from the typer app itself (the click command tree), so an
option added later is swept too. In-process with typer's CliRunner: the error boundary sits in
the app's top-level group, so the runner sees exactly what a user sees.
"""

from __future__ import annotations

import typing
from collections.abc import Iterator
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from cli.main import app
from tests.store_files import store_snapshot

# A value for each required parameter, so that the hostile value is what the command meets.
REQUIRED = {"models": "tiny-adder-digits", "statement": "SELECT 1"}
# Arguments given first, so that the command does the work its options shape.
LEADING = {("query",): ["best_cells"]}
# Parameters that take any value by design (printing it back is their job).
# Prompt text (--prefix, --suffix) is free text: any string is a prompt, '' is the default.
ANY_VALUE = {("store", "path", "store")} | {
    (command, text)
    for command in ("run", "sweep", "dataset")
    for text in ("prefix", "suffix", "answer_prefix")  # free text: any value is a prompt
}
NUMBER_VALUES = ["abc", "2,,3", "-1", "99999999999999999999", "1.5"]
TEXT_VALUES = ["", "C_9[/]", "[red]x[/red]", "o'brien\"; DROP TABLE runs; --"]


def _commands(group, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], object]]:
    for name, command in sorted(group.commands.items()):
        if hasattr(command, "commands"):
            yield from _commands(command, (*path, name))
        else:
            yield (*path, name), command


def _takes_int(param) -> bool:
    annotation = param.type_descriptor.annotation
    return annotation is int or int in typing.get_args(annotation)


def _hostile_values(param, paths: dict[str, Path]) -> list[str]:
    if param.name in ("out", "report_dir"):  # a directory is wanted: give files
        return [str(paths["file"]), str(paths["file"] / "sub")]
    if param.name == "output":  # a file is wanted: give a directory, a missing one, nothing
        return [str(paths["dir"]), str(paths["dir"] / "missing" / "x.csv"), ""]
    if param.name == "store":
        return [str(paths["file"]), str(paths["file"] / "sub")]
    if _takes_int(param):
        return NUMBER_VALUES
    return TEXT_VALUES


def _cases(paths: dict[str, Path]) -> Iterator[tuple[list[str], str]]:
    root = typer.main.get_command(app)
    for path, command in _commands(root):
        required: list[str] = []
        for param in command.params:
            if param.required and param.name in REQUIRED:
                if param.param_type_name == "argument":
                    required.append(REQUIRED[param.name])
                else:
                    required += [param.opts[0], REQUIRED[param.name]]
        for param in command.params:
            if getattr(param, "is_flag", False) or param.name == "help":
                continue
            if (*path, param.name) in ANY_VALUE:
                continue
            for value in _hostile_values(param, paths):
                if param.param_type_name == "argument":
                    args = [*path, value, *[a for a in required if a != REQUIRED[param.name]]]
                else:
                    rest = [
                        a for a in required if a not in (param.opts[0], REQUIRED.get(param.name))
                    ]
                    args = [*path, *LEADING.get(path, []), *rest, param.opts[0], value]
                yield args, f"{' '.join(path)} {param.name}={value!r}"


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("hostile") / "store"
    result = CliRunner().invoke(
        app, ["run", "--size", "8", "--targets", "C_1", "--store", str(root)]
    )
    assert result.exit_code == 0, result.output
    return root


def test_hostile_values_for_every_option_of_every_command(store, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ADDPATCH_STORE", str(store))
    a_file = tmp_path / "a-file"
    a_file.write_text("not a directory")
    a_dir = tmp_path / "a-dir"
    a_dir.mkdir()
    paths = {"file": a_file, "dir": a_dir}
    before = store_snapshot(store)
    cases = list(_cases(paths))
    swept = {case.split("=")[0] for _, case in cases}
    assert {"run seed", "sweep batch_size", "score top", "sql statement", "store verify store"} <= (
        swept
    )
    failures = []
    for args, case in cases:
        result = CliRunner().invoke(app, args)
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        problems = []
        if result.exit_code == 0:
            problems.append("exit 0")
        if "Traceback" in result.output or (
            result.exception is not None and not isinstance(result.exception, SystemExit)
        ):
            problems.append(f"escaped {type(result.exception).__name__}")
        if len(lines) != 1 or not lines[0].startswith("Error: "):
            problems.append(f"stderr {lines!r}")
        if problems:
            failures.append(f"{case}: {', '.join(problems)}")
    assert not failures, "\n".join(failures)
    assert store_snapshot(store) == before
    assert not list(tmp_path.glob("**/x.csv"))  # no output written either
