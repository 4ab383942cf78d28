"""The `addpatch` command. Each command group lives in its own module; every failure is printed
as one line by the error boundary (`cli.boundary`): `Error: ...`, exit 1 (2 for usage errors,
130 when interrupted)."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

import typer
from typer import _click
from typer.core import TyperGroup

from addpatch import notices
from cli import analysis, dataset, model, run, store, sweep
from cli.boundary import EXIT_INTERRUPTED, Failure, Interrupted, guarded
from cli.output import print_error


def _show(failure: Failure) -> None:
    print_error(failure.message, prefix=failure.prefix)


class GuardedGroup(TyperGroup):
    """The top-level group: every exception of every command goes through the error boundary,
    also under typer's CliRunner (which calls `main`)."""

    def invoke(self, ctx: _click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt as interrupt:  # typer would turn it into a silent exit code
            raise Interrupted() from interrupt

    def main(  # type: ignore[override]
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        argv = bare_option_values(list(sys.argv[1:] if args is None else args))

        def body() -> object:
            notices.on_lock_wait(lambda text: print_error(text, prefix=False))
            code = super(GuardedGroup, self).main(
                args=argv,
                prog_name="addpatch",
                complete_var=complete_var,
                standalone_mode=False,
                **extra,
            )
            if code == EXIT_INTERRUPTED:  # interrupted while click parsed the arguments
                raise Interrupted()
            return code

        code = guarded(body, _show)
        if standalone_mode:
            sys.exit(code)
        return code


app = typer.Typer(
    cls=GuardedGroup,
    rich_markup_mode=None,
    help="Where does a language model add? Interchange interventions, stored and scored with SQL.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.command("run")(run.run)
app.command("sweep")(sweep.sweep)
app.command("dataset")(dataset.dataset)
app.command("score")(analysis.score)
app.command("report")(analysis.report)
app.command("query")(analysis.query)
app.command("sql")(analysis.sql)
app.command("shell")(analysis.shell)
app.add_typer(store.app, name="store")
app.add_typer(model.app, name="model")


def bare_option_values(argv: list[str]) -> list[str]:
    """`--ray` given without an address means a local Ray instance (click needs a value)."""
    out = list(argv)
    for i, arg in enumerate(out):
        if arg == "--ray" and (i + 1 == len(out) or out[i + 1].startswith("-")):
            out.insert(i + 1, sweep.RAY_LOCAL)
            break
    return out


def main() -> None:
    typer.main.get_command(app).main(args=sys.argv[1:], prog_name="addpatch")


if __name__ == "__main__":
    main()
