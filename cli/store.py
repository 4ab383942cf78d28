"""`addpatch store ...`: where the store is, what it holds, and upgrading it."""

from __future__ import annotations

import typer

from cli.options import STORE_DEFAULT, StoreOption
from cli.output import console, print_frame

app = typer.Typer(
    rich_markup_mode=None, help="Inspect and maintain the store.", no_args_is_help=True
)


@app.command("path")
def path(store: StoreOption = STORE_DEFAULT) -> None:
    """Print the store directory.

    \b
    Example:
        ADDPATCH_STORE=/data/patching addpatch store path
    """
    print(store.resolve())


@app.command("status")
def status(store: StoreOption = STORE_DEFAULT) -> None:
    """What the store holds: schema revision, models, datasets, runs and output files.

    \b
    Example:
        addpatch store status --store ./addpatch-store
    """
    from addpatch.store.status import store_status
    from addpatch.store.store import Store

    opened = Store.open(store)
    report = store_status(opened)
    console.print(
        f"Store {opened.root.resolve()}  (schema {report.revision}, {report.size_mb:.1f} MB)"
    )
    for title, frame in report.tables.items():
        if frame.height:
            print_frame(frame, title=title)
        else:
            console.print(f"{title}: none")


@app.command("upgrade")
def upgrade(store: StoreOption = STORE_DEFAULT) -> None:
    """Back the catalog up, then migrate it to this addpatch's schema.

    \b
    Example:
        addpatch store upgrade --store ./addpatch-store
    """
    from addpatch.store.store import Store, head_revision

    opened = Store(store)
    if not opened.catalog.exists():
        from addpatch.errors import StoreError

        raise StoreError(f"no store at {store}; nothing to upgrade")
    backup = opened.upgrade()
    if backup is None:
        console.print(f"Store already at schema {head_revision()}")
    else:
        console.print(f"Backed up to {backup}; store now at schema {head_revision()}")
