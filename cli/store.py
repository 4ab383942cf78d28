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


@app.command("verify")
def verify(
    repair: bool = typer.Option(
        False,
        "--repair",
        help="Delete files no run owns; unregister damaged files so their run's rerun recomputes "
        "them. Refused while another process writes the store.",
    ),
    store: StoreOption = STORE_DEFAULT,
) -> None:
    """Check every registered output file (exists, row count, hash) and list orphans.

    Exit code 1 when something is missing or corrupt, or orphans remain.

    \b
    Example:
        addpatch store verify
        addpatch store verify --repair      # remove files left by an interrupted run
    """
    from addpatch.store.store import Store
    from addpatch.store.verify import verify_store

    result = verify_store(Store.open(store), repair=repair)
    console.print(f"Checked {result.checked} registered files")
    for label, paths in (
        ("missing", result.missing),
        ("corrupt", result.corrupt),
        ("duplicated rows", result.duplicated),
    ):
        for path in paths:
            done = (
                " (unregistered: rerun its run to recompute it)"
                if path in result.unregistered
                else ""
            )
            console.print(f"  {label}: {path}{done}")
    for path in result.orphans:
        state = (
            "removed" if path in result.removed else "orphan (no run owns it; --repair removes it)"
        )
        console.print(f"  {state}: {path}")
    if not result.ok:
        from addpatch.errors import StoreError

        remaining = [p for p in result.orphans if p not in result.removed]
        raise StoreError(
            f"{len(result.missing)} missing, {len(result.corrupt)} corrupt, "
            f"{len(result.duplicated)} with duplicated rows, {len(remaining)} orphan files; run "
            "`addpatch store verify --repair` (it unregisters damaged files and removes orphans), "
            "then rerun the command of each affected run to recompute its batches"
        )
    if result.unregistered:
        console.print(
            f"Unregistered {len(result.unregistered)} damaged files; rerun the command of each "
            "affected run to recompute them"
        )
    else:
        console.print("Store is consistent")
