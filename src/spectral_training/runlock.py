"""One run at a time per dataset: an exclusive lock file that says who holds it.

    with DatasetLock("data/02_intermediate/indian_pines/run.lock", pipeline="mae_pretrain"):
        ...  # ingestion appends to the store, training writes the run folder

The lock is ``fcntl.flock`` on the file (the kernel drops it when its process dies, even by
kill -9), and the file holds the holder's host, pid, start time and pipeline, so a refused run can
say who holds it. Holder details left in an unlocked file are a dead run's: on this host the lock
is taken over with a warning; a record from another host is refused (``flock`` need not span hosts
on a network file system), naming the file to delete once that run is known to be gone.
No polling, no waiting: a second run fails at once.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import socket
import time
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


class DatasetLockedError(RuntimeError):
    """Another run holds the dataset's lock."""

    def __init__(self, path: Path, holder: dict[str, Any]):
        self.path, self.holder = path, holder
        super().__init__(
            f"another run holds the lock {path}: pipeline {holder.get('pipeline')!r}, host {holder.get('host')}, "
            f"pid {holder.get('pid')}, started {holder.get('started')}. Wait for it to end (or stop it); two runs "
            f"on one dataset would write the same store and run folders. If that run is gone for sure, delete {path}.")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


class DatasetLock:
    """An exclusive, non-blocking lock on one dataset, released on :meth:`release` or process exit."""

    def __init__(self, path: str | Path, *, pipeline: str | None = None):
        self.path = Path(path)
        self.pipeline = pipeline
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> "DatasetLock":
        """Take the lock or raise :class:`DatasetLockedError` naming the holder."""
        if self._fd is not None:
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read(fd)
                os.close(fd)
                raise DatasetLockedError(self.path, holder) from None
            # The holder before us may have unlinked the file between our open and our flock:
            # then we locked an orphan inode, and must lock the file now at the path instead.
            try:
                same_file = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same_file = False
            if same_file:
                break
            os.close(fd)
        previous = _read(fd)
        if previous:
            if previous.get("host") not in (None, socket.gethostname()):
                os.close(fd)
                raise DatasetLockedError(self.path, previous)
            log.warning("taking over the stale lock %s: its holder (pipeline %r, pid %s, started %s) is gone%s",
                        self.path, previous.get("pipeline"), previous.get("pid"), previous.get("started"),
                        "" if not _pid_alive(int(previous.get("pid", -1))) else
                        " (that pid now belongs to another process)")
        record = {"host": socket.gethostname(), "pid": os.getpid(), "pipeline": self.pipeline,
                  "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(record).encode(), 0)
        os.fsync(fd)
        self._fd = fd
        return self

    def release(self) -> None:
        """Unlink the file, then drop the lock (in that order, so nobody locks a file being removed)."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            self.path.unlink(missing_ok=True)
        finally:
            os.close(fd)  # closing drops the flock

    def __enter__(self) -> "DatasetLock":
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def _read(fd: int) -> dict[str, Any]:
    raw = os.pread(fd, 4096, 0)
    if not raw.strip():
        return {}
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        return {"pipeline": None, "pid": -1, "started": f"? (unreadable record {raw[:60]!r})"}  # host unknown: ours
