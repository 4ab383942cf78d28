"""The `addpatch` command. Each command group lives in its own module; errors raised by the
library are printed as one line (`Error: ...`) with exit code 1."""

from __future__ import annotations

import sys

import typer

from addpatch.errors import AddpatchError
from cli import analysis, dataset, model, run, store, sweep
from cli.output import errors

app = typer.Typer(
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
    try:
        app(args=bare_option_values(sys.argv[1:]), standalone_mode=False)
    except AddpatchError as error:
        errors.print(f"[bold red]Error:[/] {error}", highlight=False, soft_wrap=True)
        sys.exit(1)
    except typer.Abort:
        errors.print("Aborted.")
        sys.exit(130)
    except KeyboardInterrupt:
        errors.print("Interrupted; finished batches are kept, rerun the same command to resume.")
        sys.exit(130)
    except Exception as error:  # click's usage errors carry their own exit code
        import click

        if isinstance(error, click.ClickException):
            error.show()
            sys.exit(error.exit_code)
        if isinstance(error, click.exceptions.Exit):
            sys.exit(error.exit_code)
        raise


if __name__ == "__main__":
    main()
