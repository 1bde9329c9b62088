"""SQLite's one writer: the outbox's write transactions take turns on a lock, the threads of a
process on an RLock and the processes on a file lock beside the database (instead of sleeping
in SQLite's busy handler)."""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import threading
import uuid
from pathlib import Path

from sqlalchemy import select
from tests.support.sinks import OutboxEnv, make_env, sqlite_env

from mailconnect.store import Tenant
from mailconnect.store.tenants import create_tenant

__all__ = ["sqlite_env"]


def _lock_file(env: OutboxEnv) -> Path:
    return Path(env.url.removeprefix("sqlite:///") + "-writer.lock")


def _taken_elsewhere(path: Path) -> bool:
    """Whether another holder has the file lock (a second open file description of the file
    conflicts with the first as another process's would)."""
    fd = os.open(path, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # (closing drops the lock if it was taken)
    return False


def test_a_write_transaction_holds_the_file_lock_until_the_outermost_one_ends(
    sqlite_env: OutboxEnv,
) -> None:
    outbox = sqlite_env.outbox
    path = _lock_file(sqlite_env)
    assert path.exists()  # make_env wrote the tenant through a transaction
    assert (path.stat().st_mode & 0o777) == 0o600
    assert not _taken_elsewhere(path)
    with outbox.transaction():
        assert _taken_elsewhere(path)
        with outbox.transaction():  # re-entrant in one thread
            assert _taken_elsewhere(path)
        assert _taken_elsewhere(path)  # the inner end does not release the outer turn
    assert not _taken_elsewhere(path)
    with outbox.reading():  # reading takes no turn
        assert not _taken_elsewhere(path)


_CHILD = """
import sys
from mailconnect.outbox import Outbox
from mailconnect.store import open_database
from mailconnect.crypto import Keyring, generate_key
from mailconnect.store.tenants import create_tenant
outbox = Outbox(engine=open_database(sys.argv[1]), keyring=Keyring([generate_key()]))
with outbox.transaction() as session:
    create_tenant(session, external_id="child", name="Child")
    session.flush()
    print("in", flush=True)
    sys.stdin.readline()
outbox.close()
"""


def test_a_writer_in_another_process_waits_for_its_turn(sqlite_env: OutboxEnv) -> None:
    written: list[uuid.UUID] = []

    def write() -> None:
        with sqlite_env.outbox.transaction() as session:
            written.append(create_tenant(session, external_id="parent", name="P").id)

    with subprocess.Popen(
        [sys.executable, "-c", _CHILD, sqlite_env.url],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    ) as child:
        assert child.stdout is not None
        assert child.stdin is not None
        try:
            assert child.stdout.readline().strip() == "in"  # inside its transaction
            writer = threading.Thread(target=write)
            writer.start()
            writer.join(0.3)
            assert writer.is_alive()  # waiting for the child's turn to end
            assert written == []
            child.stdin.write("go\n")
            child.stdin.flush()
            writer.join(10)
            assert not writer.is_alive()
            assert child.wait(10) == 0
        finally:
            if child.poll() is None:
                child.kill()
    with sqlite_env.outbox.reading() as session:
        names = set(session.scalars(select(Tenant.external_id)))
    assert {"child", "parent"} <= names
    assert len(written) == 1


def test_without_a_lock_file_writes_still_work_on_sqlites_own_lock(tmp_path: Path) -> None:
    """(Where the lock file cannot be opened, here because a directory is in its way.)"""
    (tmp_path / "outbox.db-writer.lock").mkdir()
    env = make_env(f"sqlite:///{tmp_path / 'outbox.db'}")  # writes a tenant
    try:
        with env.outbox.transaction() as session:
            create_tenant(session, external_id="second", name="Second")
        with env.outbox.reading() as session:
            assert len(set(session.scalars(select(Tenant.id)))) == 2
    finally:
        env.outbox.close()
