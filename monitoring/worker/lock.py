"""One collect worker per host name, so no host's samples are ever written twice.

Two locks, both released by the operating system or the server when the worker dies (no
stale lock to clean up after a crash or ``kill -9``):

* a local ``fcntl`` lock file: next to the database on SQLite (the database is on this
  machine, so the file lock is the whole story), in the temporary directory on PostgreSQL,
  named after the host name and the database, so one machine may run workers for several
  databases or names;
* on PostgreSQL, a session-level advisory lock (``pg_try_advisory_lock`` on a stable 64-bit
  hash of the host name) held on a connection of its own, so workers on *different*
  machines that were given the same name are refused too.

If PostgreSQL is down when the worker starts, the worker runs on the local lock alone and
takes the database lock as soon as the database answers (:meth:`WorkerLock.ensure`, called
from the worker's background thread). The same happens when a database restart drops the
lock's session. Should another worker have taken the lock meanwhile, :class:`LockLost`
tells this one to stop.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import re
import socket
import tempfile
from pathlib import Path
from typing import Any

from django.conf import settings

log = logging.getLogger(__name__)

_APP_PREFIX = "hoofhearted collect: "
_NAMESPACE = b"hoofhearted-collect:"
# Django's own keys in DATABASES OPTIONS (the rest are libpq connection parameters).
_DJANGO_ONLY = {
    "isolation_level",
    "server_side_binding",
    "pool",
    "assume_role",
    "cursor_factory",
    "context",
    "prepare_threshold",
}


class LockHeld(Exception):
    """Another worker already collects for this host name."""


class LockLost(Exception):
    """This worker lost its database lock to another worker (after a database outage)."""


def this_process() -> str:
    return f"pid {os.getpid()} on {socket.gethostname()}"


def refusal(host_name: str, holder: str | None) -> str:
    who = f" ({holder})" if holder else ""
    return (
        f"another collect worker is already running for host {host_name!r}{who}; "
        "stop it first, or give this worker another name with HOOFHEARTED_HOST_NAME"
    )


def lock_key(host_name: str) -> int:
    """A stable signed 64-bit key for ``pg_advisory_lock`` (the same in every process)."""
    digest = hashlib.blake2b(_NAMESPACE + host_name.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def _slug(text: str) -> str:
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", text)[:40]
    return f"{safe}-{hashlib.blake2b(text.encode(), digest_size=4).hexdigest()}"


def local_lock_path(host_name: str, database: dict[str, Any]) -> Path:
    """Where the local lock file lives for ``host_name`` and this database."""
    if database["ENGINE"].endswith("sqlite3"):
        name = str(database["NAME"])
        if name and ":memory:" not in name and "mode=memory" not in name:
            db = Path(name)
            return db.with_name(f"{db.name}.collect-{_slug(host_name)}.lock")
    identity = f"{database.get('HOST')}:{database.get('PORT')}/{database.get('NAME')}"
    return (
        Path(tempfile.gettempdir())
        / f"hoofhearted-collect-{_slug(host_name + '@' + identity)}.lock"
    )


class LocalLock:
    """An exclusive ``flock`` on a file that records who holds it; removed on release.

    Removing the file at release is safe because a locker checks, once it holds the lock,
    that the path still names the file it locked (else it locked a file just removed, and
    tries again on the new one).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def acquire(self, host_name: str) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _attempt in range(5):
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.read(fd, 200).decode(errors="replace").strip() or None
                os.close(fd)
                raise LockHeld(refusal(host_name, holder)) from None
            if self._still_linked(fd):
                break
            os.close(fd)  # the holder removed it as we opened it: lock the new file
        else:
            raise LockHeld(refusal(host_name, None))
        os.ftruncate(fd, 0)
        os.write(fd, f"{this_process()}\n".encode())
        self._fd = fd

    def _still_linked(self, fd: int) -> bool:
        try:
            return os.stat(self.path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            return False

    def release(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                self.path.unlink()  # while still holding it: nobody can lock it meanwhile
            with contextlib.suppress(OSError):
                fcntl.flock(self._fd, fcntl.LOCK_UN)
                os.close(self._fd)
            self._fd = None


class PgAdvisoryLock:
    """``pg_try_advisory_lock`` on a dedicated autocommit connection (psycopg 3)."""

    def __init__(self, host_name: str, database: dict[str, Any]) -> None:
        self.host_name = host_name
        self.database = database
        self.key = lock_key(host_name)
        self.conn: Any = None

    @property
    def held(self) -> bool:
        return self.conn is not None and not self.conn.closed

    def _connect(self) -> Any:
        import psycopg

        db = self.database
        # libpq options (sslmode, connect_timeout …) as Django passes them; not Django's own
        options = {k: v for k, v in (db.get("OPTIONS") or {}).items() if k not in _DJANGO_ONLY}
        options.setdefault("connect_timeout", 5)
        return psycopg.connect(
            dbname=db.get("NAME") or "postgres",
            user=db.get("USER") or None,
            password=db.get("PASSWORD") or None,
            host=db.get("HOST") or None,
            port=db.get("PORT") or None,
            application_name=(_APP_PREFIX + this_process())[:63],
            autocommit=True,
            **options,
        )

    def try_acquire(self) -> None:
        """Take the lock; raises LockHeld if another session has it, psycopg errors if down."""
        conn = self._connect()
        try:
            got = conn.execute("SELECT pg_try_advisory_lock(%s)", (self.key,)).fetchone()[0]
            if not got:
                raise LockHeld(refusal(self.host_name, self._holder(conn)))
        except BaseException:
            conn.close()
            raise
        self.conn = conn

    def _holder(self, conn: Any) -> str | None:
        row = conn.execute(
            "SELECT a.application_name, a.client_addr::text, a.pid FROM pg_locks l "
            "JOIN pg_stat_activity a ON a.pid = l.pid "
            "WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 "
            "AND l.classid = %s::bigint::oid AND l.objid = %s::bigint::oid",
            ((self.key >> 32) & 0xFFFFFFFF, self.key & 0xFFFFFFFF),
        ).fetchone()
        if row is None:
            return None
        app, addr, backend = row
        if app and app.startswith(_APP_PREFIX):
            return app[len(_APP_PREFIX) :]
        return f"database session {backend} from {addr or 'a local socket'}"

    def alive(self) -> bool:
        """Whether the lock's session still exists (a database restart ends it)."""
        if not self.held:
            return False
        try:
            self.conn.execute("SELECT 1")
        except Exception:
            self.release()
            return False
        return True

    def release(self) -> None:
        if self.conn is not None:
            with contextlib.suppress(Exception):
                self.conn.close()  # closing the session releases a session-level lock
            self.conn = None


class WorkerLock:
    """The local lock, plus the database lock on PostgreSQL (taken when it answers)."""

    def __init__(self, host_name: str, *, using: str = "default") -> None:
        self.host_name = host_name
        database = settings.DATABASES[using]
        self.local = LocalLock(local_lock_path(host_name, database))
        self.pg = (
            PgAdvisoryLock(host_name, database)
            if database["ENGINE"].endswith("postgresql")
            else None
        )
        self._waiting = False  # the lock is not held because the database was unreachable
        self.last_error: str | None = None

    def acquire(self) -> None:
        """Lock at start; raises LockHeld (with the refusal message) if another worker runs."""
        self.local.acquire(self.host_name)
        if self.pg is None:
            return
        try:
            self.pg.try_acquire()
        except LockHeld:
            self.local.release()
            raise
        except Exception as exc:  # database down: run on the local lock for now
            self._waiting = True
            self.last_error = _one_line(exc)
            log.warning(
                "database unreachable at start (%s): holding the local lock %s; the "
                "database lock for host %r is taken when the database is back",
                _one_line(exc),
                self.local.path,
                self.host_name,
            )

    def ensure(self) -> bool:
        """Hold the database lock again if it was never taken or a restart dropped it.

        Returns whether it is held now (always True without PostgreSQL); raises LockLost
        if another worker took it meanwhile.
        """
        if self.pg is None or self.pg.alive():
            return True
        try:
            self.pg.try_acquire()
        except LockHeld as exc:
            raise LockLost(
                f"the database lock for host {self.host_name!r} was taken by another worker "
                f"while the database was away: {exc}"
            ) from exc
        except Exception as exc:  # still unreachable: the worker says so, once per outage
            self.last_error = _one_line(exc)
            self._waiting = True
            log.debug("database lock not retaken yet: %s", self.last_error)
            return False
        self.last_error = None
        if self._waiting:
            self._waiting = False
            log.warning("database lock for host %r held again", self.host_name)
        return True

    def release(self) -> None:
        if self.pg is not None:
            self.pg.release()
        self.local.release()


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
