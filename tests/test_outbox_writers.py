"""SQLite's one writer: the transactions of the outbox's sessions take turns on a lock, the
threads of a process on an RLock and the processes on a file lock beside the database (instead
of sleeping in SQLite's busy handler)."""

from __future__ import annotations

import fcntl
import gc
import os
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import pytest
from sqlalchemy import select
from tests.support.sinks import OutboxEnv, make_env, sqlite_env

from mailconnect.outbox import Outbox, box
from mailconnect.store import Tenant, open_database
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


def _written_by_another_thread(outbox: Outbox, external_id: str) -> bool:
    """Whether a write in a thread of its own got its turn and committed within 10 s."""
    done = threading.Event()

    def write() -> None:
        with outbox.transaction() as session:
            create_tenant(session, external_id=external_id, name=external_id)
        done.set()

    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    writer.join(10)
    return done.is_set()


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


def test_every_transaction_of_the_outboxs_sessions_takes_the_turn(sqlite_env: OutboxEnv) -> None:
    """The service and the CLI write through ``outbox.sessions`` directly, not through
    ``Outbox.transaction``: their transactions take the turn all the same, from when they begin
    (explicitly or at first use) until they end, committed or rolled back."""
    outbox = sqlite_env.outbox
    path = _lock_file(sqlite_env)
    with outbox.sessions.begin() as session:
        assert _taken_elsewhere(path)
        create_tenant(session, external_id="begun", name="Begun")
        with session.begin_nested():  # a savepoint: the same turn, not a second one
            create_tenant(session, external_id="saved", name="Saved")
        assert _taken_elsewhere(path)
    assert not _taken_elsewhere(path)
    with outbox.sessions() as session:
        assert not _taken_elsewhere(path)  # nothing begun yet
        session.scalar(select(Tenant.id).limit(1))  # begins at first use
        assert _taken_elsewhere(path)
        session.commit()
        assert not _taken_elsewhere(path)
        create_tenant(session, external_id="rolled", name="Rolled")  # begins again
        assert _taken_elsewhere(path)
        session.rollback()
        assert not _taken_elsewhere(path)

    def failing() -> None:
        with outbox.sessions.begin() as session:
            create_tenant(session, external_id="failed", name="Failed")
            raise RuntimeError("the caller's error")

    with pytest.raises(RuntimeError):
        failing()
    assert not _taken_elsewhere(path)
    with outbox.readers.begin() as session:  # reading sessions take no turn
        session.scalar(select(Tenant.id).limit(1))
        assert not _taken_elsewhere(path)
    with outbox.reading() as session:
        names = set(session.scalars(select(Tenant.external_id)))
    assert {"begun", "saved"} <= names
    assert not {"rolled", "failed"} & names


def test_a_transaction_ended_on_another_thread_gives_the_turn_back(
    sqlite_env: OutboxEnv,
) -> None:
    """SQLAlchemy lets a session move between threads: the turn it took on one is given back by
    the commit on the other, and the next writer gets it."""
    outbox = sqlite_env.outbox
    path = _lock_file(sqlite_env)
    session = outbox.sessions()
    create_tenant(session, external_id="moved", name="Moved")  # begins here, in this thread
    assert _taken_elsewhere(path)
    failures: list[BaseException] = []

    def commit() -> None:
        try:
            session.commit()
            session.close()
        except BaseException as exc:  # collected for the assertion below
            failures.append(exc)

    committer = threading.Thread(target=commit)
    committer.start()
    committer.join(10)
    assert failures == []
    assert not _taken_elsewhere(path)
    assert _written_by_another_thread(outbox, "next")  # (not if the turn were kept)
    with outbox.transaction():  # and this thread, which began the first, takes a new turn
        assert _taken_elsewhere(path)
    assert not _taken_elsewhere(path)


def test_a_session_dropped_without_closing_gives_the_turn_back_when_collected(
    sqlite_env: OutboxEnv,
) -> None:
    outbox = sqlite_env.outbox
    path = _lock_file(sqlite_env)

    def forgetful() -> None:
        session = outbox.sessions()
        session.scalar(select(Tenant.id).limit(1))  # begun, never committed nor closed
        assert _taken_elsewhere(path)

    forgetful()
    gc.collect()
    assert not _taken_elsewhere(path)
    assert _written_by_another_thread(outbox, "later")


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
            assert _taken_elsewhere(_lock_file(sqlite_env))  # its turn, not only SQLite's lock
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


def test_two_outboxes_on_one_file_share_the_turn_of_a_thread(sqlite_env: OutboxEnv) -> None:
    """A second engine on the same file in the same thread takes the same turn (one file lock
    per file and process) instead of waiting for itself forever. (Had the outer transaction
    written already, SQLite's own lock would make the inner one fail after its busy timeout,
    as it always did.)"""
    other = Outbox(engine=open_database(sqlite_env.url), keyring=sqlite_env.outbox.keyring)
    done = threading.Event()

    def nested() -> None:
        with sqlite_env.outbox.transaction(), other.transaction() as inner:
            create_tenant(inner, external_id="inner", name="Inner")
        done.set()

    try:
        assert box._writer_turn(other.engine) is box._writer_turn(sqlite_env.outbox.engine)
        worker = threading.Thread(target=nested, daemon=True)
        worker.start()
        worker.join(10)
        assert done.is_set()
    finally:
        other.close()


def test_a_file_lock_held_too_long_elsewhere_leaves_the_decision_to_sqlite(
    sqlite_env: OutboxEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another process keeping the file lock (but not SQLite's) past the busy timeout does not
    stall the writers: they go on under SQLite's own lock."""
    monkeypatch.setattr(box, "BUSY_TIMEOUT_MS", 200)
    fd = os.open(_lock_file(sqlite_env), os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        # (a wait without end would fail here, not hang the run)
        assert _written_by_another_thread(sqlite_env.outbox, "patient")
    finally:
        os.close(fd)
    with sqlite_env.outbox.reading() as session:
        assert "patient" in set(session.scalars(select(Tenant.external_id)))


_FORKING = """
import os, sys
from mailconnect.outbox import Outbox, box
from mailconnect.store import open_database
from mailconnect.crypto import Keyring, generate_key
outbox = Outbox(engine=open_database(sys.argv[1]), keyring=Keyring([generate_key()]))
turns = box._writer_turn(outbox.engine)
with outbox.transaction():
    child = os.fork()
    if child == 0:
        try:
            fresh = (turns._depth, turns._fd, turns._holding) == (0, None, False)
        finally:
            os._exit(0 if fresh else 3)
    _, status = os.waitpid(child, 0)
    assert turns._holding
sys.exit(os.waitstatus_to_exitcode(status))
"""


def test_a_forked_child_starts_without_its_parents_turn(sqlite_env: OutboxEnv) -> None:
    """(In a process of its own: forking this test run, with its threads, is not safe.)"""
    done = subprocess.run(
        [sys.executable, "-c", _FORKING, sqlite_env.url], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr


def _descriptors_of(path: Path) -> int:
    fds = Path("/proc/self/fd")
    return sum(1 for fd in fds.iterdir() if os.path.realpath(fd) == str(path.resolve()))


def test_the_lock_file_is_closed_with_the_last_engine_on_the_database(tmp_path: Path) -> None:
    if not Path("/proc/self/fd").is_dir():
        pytest.skip("needs /proc")
    url = f"sqlite:///{tmp_path / 'outbox.db'}"
    env = make_env(url)
    second = Outbox(engine=open_database(url), keyring=env.outbox.keyring)
    with second.transaction() as session:
        create_tenant(session, external_id="second", name="Second")
    path = _lock_file(env)
    assert _descriptors_of(path) == 1  # one for both engines
    env.outbox.close()
    del env
    gc.collect()
    with second.transaction():  # the collected engine is counted out here
        assert _descriptors_of(path) == 1  # the other engine still uses it
    second.close()
    del second, session
    gc.collect()
    other = make_env(f"sqlite:///{tmp_path / 'other.db'}")  # any turn drops the collected
    try:
        assert _descriptors_of(path) == 0
    finally:
        other.outbox.close()
