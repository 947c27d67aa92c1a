"""The dataset lock (runlock.py): one writing run per dataset, the holder named, stale locks taken over."""

import json
import socket
import subprocess
import sys

import pytest

from spectral_training.runlock import DatasetLock, DatasetLockedError

HOLD = """
import sys, time
from spectral_training.runlock import DatasetLock
lock = DatasetLock(sys.argv[1], pipeline="holder").acquire()
print("held", flush=True)
time.sleep(60)
"""


def _dead_pid() -> int:
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(done.stdout)


def test_a_second_lock_is_refused_naming_the_holder(tmp_path):
    """Promise: a second run on the same dataset is refused, told the holder's host, pid, start time and pipeline."""
    path = tmp_path / "run.lock"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(DatasetLockedError) as refused:
            DatasetLock(path, pipeline="second").acquire()
        message = str(refused.value)
        assert f"pid {holder.pid}" in message and socket.gethostname() in message and "'holder'" in message
        assert refused.value.holder["started"]
    finally:
        holder.kill()
        holder.wait()


def test_the_lock_is_free_again_after_release_and_after_its_holder_is_killed(tmp_path):
    """Promise: releasing (or the holder dying, even by kill -9) frees the dataset."""
    path = tmp_path / "run.lock"
    with DatasetLock(path, pipeline="first"):
        assert path.is_file()
    assert not path.exists()
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(path)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    holder.kill()
    holder.wait()
    with DatasetLock(path, pipeline="after the kill") as lock:
        assert lock.held and json.loads(path.read_text())["pipeline"] == "after the kill"


def test_a_stale_lock_of_a_dead_process_on_this_host_is_taken_over_with_a_warning(tmp_path, caplog):
    """Promise: a lock file left by a dead process on this host is taken over, with a warning naming it."""
    path = tmp_path / "run.lock"
    dead = _dead_pid()
    path.write_text(json.dumps({"host": socket.gethostname(), "pid": dead, "pipeline": "old",
                                "started": "2026-01-01T00:00:00"}))
    with caplog.at_level("WARNING"), DatasetLock(path, pipeline="new"):
        assert json.loads(path.read_text())["pid"] != dead
    assert f"pid {dead}" in caplog.text and "stale" in caplog.text


def test_a_lock_record_of_another_host_is_refused(tmp_path):
    """Promise: a lock written on another machine (flock need not span hosts) is not taken over silently."""
    path = tmp_path / "run.lock"
    path.write_text(json.dumps({"host": "elsewhere.example", "pid": 1, "pipeline": "remote", "started": "t"}))
    with pytest.raises(DatasetLockedError, match="elsewhere.example"):
        DatasetLock(path).acquire()
