"""Open, create, check and upgrade a store directory.

Layout of a store:
  catalog.duckdb               the catalog (tables from addpatch.store.schema, alembic-managed)
  outputs/model=M/run=R/*.parquet
                               patched outputs, one file per batch of examples
  tmp/                         files being written; renamed into outputs/ when complete
  backups/                     catalog copies made before `addpatch store upgrade`

Connections are short-lived: DuckDB lets one process write a file at a time, so addpatch opens
the catalog for each step and closes it, and readers can get in between.
"""

from __future__ import annotations

import fcntl
import functools
import os
import re
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import IO, Any, TypeVar

import duckdb
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine

from addpatch import notices
from addpatch.errors import SchemaMismatch, StoreError
from addpatch.resources import migrations_dir
from addpatch.settings import DEFAULT_STORE, STORE_ENV

CATALOG_FILE = "catalog.duckdb"
CREATING_MARKER = "creating"  # present while addpatch creates the catalog; removed when done
LOCK_WAIT_S = 120.0
LOCK_NOTICE_AFTER_S = 1.0  # a wait this long is announced (shorter ones are other commits)
T = TypeVar("T")


def default_store_path() -> Path:
    """`$ADDPATCH_STORE`, else ./addpatch-store."""
    return Path(os.environ.get(STORE_ENV) or DEFAULT_STORE)


def _alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(migrations_dir()))
    return config


def head_revision() -> str:
    head = ScriptDirectory.from_config(_alembic_config()).get_current_head()
    assert head is not None
    return head


def _upgrade(catalog: Path) -> None:
    from alembic import command

    engine = create_engine(f"duckdb:///{catalog}")
    try:
        with engine.connect() as connection:
            # views and macros bind the store's relative Parquet paths when created
            connection.exec_driver_sql("SET file_search_path = ?", (str(catalog.parent.resolve()),))
            # one transaction per migration (env.py): DuckDB cannot commit a transaction that
            # alters a table it has updated (0003 updates datasets, 0007 adds a column to it)
            connection.commit()
            config = _alembic_config()
            config.attributes["connection"] = connection
            command.upgrade(config, "head")
    finally:
        engine.dispose()


class Store:
    """A store directory whose catalog is at this addpatch's schema revision."""

    def __init__(self, root: Path) -> None:
        self.root = root

    @property
    def catalog(self) -> Path:
        return self.root / CATALOG_FILE

    @property
    def outputs_dir(self) -> Path:
        return self.root / "outputs"

    @property
    def tmp_dir(self) -> Path:
        return self.root / "tmp"

    # -- opening --------------------------------------------------------------------------
    @classmethod
    def open(cls, root: Path | str | None = None, *, create: bool = False) -> Store:
        """Open an existing store (or create it when `create`), checking its schema revision.

        Creation holds the writer lock, and a catalog is deleted only when it is provably this
        addpatch's own interrupted creation (the `creating` marker written before it is there).
        """
        store = cls(Path(root) if root is not None else default_store_path())
        if store.catalog.exists() and not store._creation_marker.exists():
            store.check_revision()
            return store
        if not create:
            if store._creation_marker.exists():
                raise StoreError(
                    f"the store at {store.root} is being created, or its creation was interrupted; "
                    "rerun `addpatch run` (or the command that created it) to finish it"
                )
            raise StoreError(
                f"no store at {store.root}; run `addpatch run` to create one, or pass "
                "--store / set ADDPATCH_STORE to an existing store"
            )
        store._make_root()
        with store.writer():
            if store._creation_marker.exists():  # ours, interrupted: nothing was committed
                for leftover in (store.catalog, store.root / f"{CATALOG_FILE}.wal"):
                    leftover.unlink(missing_ok=True)
            if not store.catalog.exists():
                store._create()
        store.check_revision()
        return store

    @classmethod
    def open_if_created(cls, root: Path | str) -> Store | None:
        """The store at `root` when its creation is complete, else None (nothing there yet, or a
        creation that was interrupted: `open(create=True)` finishes that one)."""
        store = cls(Path(root))
        if store.catalog.exists() and not store._creation_marker.exists():
            return cls.open(root)
        return None

    @property
    def _creation_marker(self) -> Path:
        return self.root / CREATING_MARKER

    def _make_root(self) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            probe = self.root / ".write-test"
            probe.write_text("")
            probe.unlink()
        except OSError as error:
            raise StoreError(
                f"cannot create a store at {self.root} ({error.strerror}); choose a writable "
                "directory with --store or ADDPATCH_STORE"
            ) from None

    def _create(self) -> None:
        """Migrate a new catalog to head; the marker says a catalog here is ours until done."""
        self._creation_marker.write_text(f"addpatch pid {os.getpid()}\n")
        _upgrade(self.catalog)
        with self.connect() as conn:
            from addpatch.store.outputs_view import refresh_outputs_view

            refresh_outputs_view(conn)
        self._creation_marker.unlink()

    def _is_blank(self) -> bool:
        """A catalog file holding no table at all."""
        with self.connect(read_only=True) as conn:
            count = conn.execute("SELECT count(*) FROM information_schema.tables").fetchone()
        return bool(count and count[0] == 0)

    def revision(self) -> str | None:
        with self.connect(read_only=True) as conn:
            try:
                row = conn.execute("SELECT version_num FROM alembic_version").fetchone()
            except duckdb.CatalogException:
                return None
        return row[0] if row else None

    def check_revision(self) -> None:
        current, head = self.revision(), head_revision()
        if current == head:
            return
        if current is None:
            what = "holds no table" if self._is_blank() else "holds tables but no addpatch schema"
            raise StoreError(
                f"{self.catalog} {what}: it is not an addpatch catalog (addpatch never deletes "
                "one it did not create); move it away, or choose another --store"
            )
        known = {
            s.revision for s in ScriptDirectory.from_config(_alembic_config()).walk_revisions()
        }
        if current in known:
            raise SchemaMismatch(
                f"the store at {self.root} is at schema revision {current}, this addpatch expects "
                f"{head}; run `addpatch store upgrade --store {self.root}` (it backs the store up first)"
            )
        raise SchemaMismatch(
            f"the store at {self.root} is at schema revision {current}, unknown to this addpatch "
            f"(expects {head}); it was written by a newer addpatch: upgrade addpatch"
        )

    def upgrade(self) -> Path | None:
        """Back the catalog up, then migrate it to head; returns the backup path (None if current)."""
        with self.writer():
            return self._upgrade_locked()

    def _upgrade_locked(self) -> Path | None:
        current, head = self.revision(), head_revision()
        if current == head:
            return None
        backups = self.root / "backups"
        backups.mkdir(exist_ok=True)
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        backup = backups / f"catalog-{current}-{stamp}.duckdb"
        shutil.copy2(self.catalog, backup)
        try:
            _upgrade(self.catalog)
        except Exception as error:  # DuckDB rolls the failed migration back
            message = str(error).splitlines()[0]
            reached = self.revision()
            state = "it is unchanged" if reached == current else f"it is at revision {reached}"
            raise StoreError(
                f"upgrading the store failed ({message}); {state}, and a copy of its "
                f"catalog is at {backup}; run `addpatch store verify`, then retry"
            ) from None
        with self.connect() as conn:
            from addpatch.store.outputs_view import refresh_outputs_view

            refresh_outputs_view(conn)
        return backup

    # -- connections ----------------------------------------------------------------------
    @contextmanager
    def connect(
        self, read_only: bool = False, wait_s: float = LOCK_WAIT_S
    ) -> Iterator[duckdb.DuckDBPyConnection]:
        """A DuckDB connection to the catalog; relative Parquet paths resolve inside the store.

        DuckDB lets one process at a time open the file for writing (and none read meanwhile),
        so addpatch keeps connections short and waits up to `wait_s` for another to close.
        """
        started = time.monotonic()
        deadline = started + wait_s
        delay = 0.02
        announced = False
        while True:
            try:
                conn = duckdb.connect(str(self.catalog), read_only=read_only)
                break
            except duckdb.IOException as error:
                message = str(error).splitlines()[0]
                if "lock" not in message.lower():
                    raise StoreError(
                        f"cannot open the store at {self.root} ({message}); check that the "
                        "directory and catalog.duckdb are readable and writable"
                    ) from None
                if not announced and time.monotonic() - started >= LOCK_NOTICE_AFTER_S:
                    announced = True
                    notices.lock_wait(
                        f"waiting for {_lock_holder(message)} holding {self.catalog.name} to "
                        f"close it (up to {wait_s:.0f} s; a DuckDB shell left open?)"
                    )
                if time.monotonic() >= deadline:
                    raise StoreError(
                        f"the store at {self.root} stayed open in another process for {wait_s:.0f} s "
                        "(a DuckDB shell or a long query?); close it and retry"
                    ) from None
                time.sleep(delay)
                delay = min(delay * 2, 0.5)
        try:
            conn.execute("SET file_search_path = ?", [str(self.root.resolve())])
            yield conn
        finally:
            conn.close()

    @contextmanager
    def writer(self) -> Iterator[None]:
        """Hold the store's writer lock: one writing addpatch process per store at a time.

        Every library function that writes the store takes it; it is re-entrant within one
        process, and another process holding it is refused at once with a clear StoreError.
        """
        key = str(self.root.resolve())
        held = _HELD_WRITERS.get(key)
        if held is not None:
            _HELD_WRITERS[key] = (held[0], held[1] + 1)
            try:
                yield
            finally:
                handle, depth = _HELD_WRITERS[key]
                _HELD_WRITERS[key] = (handle, depth - 1)
            return
        handle = self._take_writer_lock()
        _HELD_WRITERS[key] = (handle, 1)
        try:
            yield
        finally:
            del _HELD_WRITERS[key]
            try:
                handle.seek(0)
                handle.truncate()
            finally:
                handle.close()

    def _take_writer_lock(self) -> IO[str]:
        lock_path = self.root / "writer.lock"
        try:
            handle = lock_path.open("a+")
        except OSError as error:
            raise StoreError(
                f"the store at {self.root} is read-only ({error.strerror}); pass a writable "
                "--store, or copy the store somewhere writable to add to it"
            ) from None
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            owner = handle.read().strip() or "another process"
            handle.close()
            raise StoreError(
                f"the store at {self.root} is being written by {owner}; wait for it to finish "
                "or use another --store (queries keep working meanwhile)"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"addpatch pid {os.getpid()}")
        handle.flush()
        return handle


def _lock_holder(message: str) -> str:
    """`the process /usr/bin/duckdb, pid 1234` from DuckDB's lock error, when it names one."""
    found = re.search(r"held in (.+?) \(PID (\d+)\)", message)
    if found is None:
        return "another process"
    program = Path(found.group(1)).name
    what = "the DuckDB shell" if program == "duckdb" else f"{program}"
    return f"{what} (pid {found.group(2)})"


def writes_store(function: Callable[..., T]) -> Callable[..., T]:
    """Run `function(store, ...)` holding `store`'s writer lock (re-entrant)."""

    @functools.wraps(function)
    def locked(store: Store, *args: Any, **kwargs: Any) -> T:
        with store.writer():
            return function(store, *args, **kwargs)

    return locked


# store root -> (open writer.lock handle, depth) for the writer locks this process holds
_HELD_WRITERS: dict[str, tuple[IO[str], int]] = {}
