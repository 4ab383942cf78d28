"""The CLI's error boundary: every failure becomes one line on stderr and an exit code.

- addpatch's own errors (`AddpatchError`): `Error: <message>`, exit 1.
- usage errors (unknown option or command, a value click cannot parse): `Error: ...`, exit 2.
- Ctrl-C (KeyboardInterrupt, DuckDB's interrupted query): one line, exit 130.
- the operating system's errors (disk full, permission denied, out of memory): one line naming
  the file and the fix, exit 1.
- anything else is a bug: one line saying so and where its traceback was written, exit 1.

`ADDPATCH_DEBUG=1` lets every error through with its Python traceback.
"""

from __future__ import annotations

import errno
import os
import tempfile
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import click
    from typer import _click

DEBUG_ENV = "ADDPATCH_DEBUG"
INTERRUPTED = "Interrupted; rerun the same command to resume (finished batches are kept)"
EXIT_ERROR, EXIT_USAGE, EXIT_INTERRUPTED = 1, 2, 130


@dataclass(frozen=True)
class Failure:
    message: str  # one line, printed after `Error: ` (or alone when interrupted)
    exit_code: int
    prefix: bool = True


def debugging() -> bool:
    return os.environ.get(DEBUG_ENV, "").strip() not in ("", "0", "false", "no")


def one_line(text: str) -> str:
    return " ".join(part.strip() for part in str(text).splitlines() if part.strip())


def _no_space(error: BaseException) -> bool:
    if isinstance(error, OSError) and error.errno == errno.ENOSPC:
        return True
    return "no space left on device" in str(error).lower()


class Interrupted(Exception):
    """A KeyboardInterrupt carried past typer (which would turn it into a silent exit code)."""


def _interrupted(error: BaseException) -> bool:
    if isinstance(error, KeyboardInterrupt | Interrupted):
        return True
    import duckdb

    return isinstance(error, duckdb.InterruptException)


def _usage(error: BaseException) -> Failure | None:
    import click
    import typer
    from typer import _click

    usage_types = (_click.exceptions.UsageError, click.exceptions.UsageError)
    click_types = (_click.exceptions.ClickException, click.exceptions.ClickException)
    if isinstance(error, usage_types):
        message = one_line(error.format_message())
        command = error.ctx.command_path if error.ctx is not None else "addpatch"
        return Failure(f"{message} (see `{command} --help`)", EXIT_USAGE)
    if isinstance(error, click_types):
        return Failure(one_line(error.format_message()), error.exit_code or EXIT_ERROR)
    if isinstance(error, (typer.Abort, click.exceptions.Abort)):
        return Failure("aborted", EXIT_ERROR)
    return None


def _no_args_is_help() -> tuple[
    type[click.exceptions.UsageError | _click.exceptions.UsageError], ...
]:
    import click
    from typer import _click

    return (_click.exceptions.NoArgsIsHelpError, click.exceptions.NoArgsIsHelpError)


def _write_traceback(error: BaseException) -> Path | None:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    path = Path(tempfile.gettempdir()) / f"addpatch-traceback-{stamp}-{os.getpid()}.txt"
    try:
        path.write_text("".join(traceback.format_exception(error)))
    except OSError:
        return None
    return path


def classify(error: BaseException) -> Failure:
    """The one line and exit code for `error` (never raises)."""
    from addpatch.errors import AddpatchError

    if _interrupted(error):
        return Failure(INTERRUPTED, EXIT_INTERRUPTED, prefix=False)
    if isinstance(error, AddpatchError):
        return Failure(one_line(str(error)), EXIT_ERROR)
    usage = _usage(error)
    if usage is not None:
        return usage
    if _no_space(error):
        where = getattr(error, "filename", None)
        return Failure(
            f"no space left on device{f' writing {where}' if where else ''}; free some space and "
            "rerun the same command (what was stored before is intact, finished batches are kept)",
            EXIT_ERROR,
        )
    if isinstance(error, MemoryError) or type(error).__name__ == "OutOfMemoryError":
        return Failure(
            "out of memory; use a smaller --batch-size or --size, or a machine with more memory",
            EXIT_ERROR,
        )
    if isinstance(error, OSError) and error.strerror:
        where = f" ({error.filename})" if error.filename else ""
        return Failure(
            f"{error.strerror}{where}; check the path and its permissions, then rerun",
            EXIT_ERROR,
        )
    import duckdb

    if isinstance(error, duckdb.IOException):  # the disk or the filesystem, not addpatch
        return Failure(
            f"DuckDB {type(error).__name__}: {one_line(str(error))[:300]}; check the store's disk "
            "and permissions, then rerun the same command (registered batches are kept)",
            EXIT_ERROR,
        )
    written = _write_traceback(error)
    where = f"its traceback is in {written}" if written else "its traceback could not be written"
    return Failure(
        f"unexpected {type(error).__name__}: {one_line(str(error))[:300]} (a bug in addpatch; "
        f"{where}; rerun with {DEBUG_ENV}=1 to see it)",
        EXIT_ERROR,
    )


def _silence_stdout() -> None:
    """After the reader of stdout went away, let Python's final flush go nowhere."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
    except (OSError, ValueError):
        pass


def guarded(body: Callable[[], object], show: Callable[[Failure], None]) -> int:
    """Run `body`; its exit code, or the failure it raised shown as one line and its code."""
    try:
        result = body()
    except SystemExit as done:
        code = done.code
        return code if isinstance(code, int) else (0 if code is None else EXIT_ERROR)
    except _no_args_is_help() as shown:  # `addpatch store`: the group's help, as click does
        try:
            print(shown.ctx.get_help() if shown.ctx is not None else shown.format_message())
        except BrokenPipeError:
            _silence_stdout()
        return EXIT_USAGE
    except BrokenPipeError:
        _silence_stdout()
        return EXIT_ERROR  # the reader went away (`addpatch sql ... | head`): nothing to say
    except BaseException as error:
        if debugging() and not _interrupted(error):
            raise
        try:
            failure = classify(error)
        except Exception:  # never let the boundary itself leak a traceback
            failure = Failure(f"unexpected {type(error).__name__}: {one_line(str(error))[:300]}", 1)
        show(failure)
        return failure.exit_code
    return result if isinstance(result, int) else 0
