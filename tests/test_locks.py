"""The lock managers that serialise steps across runs: mutual exclusion between processes, and no
lock outliving a holder killed with SIGKILL (an OS file lock dies with its process; a Redis lock
expires within one lease, renewed while its holder lives). Redis is a real `redis-server` on a
free loopback port, started and stopped by pid."""

from __future__ import annotations

import os
import pickle
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from plantcad_flows.cluster.processes import free_port
from plantcad_flows.errors import StorageError
from tasks.locks import FileLockManager, lock_directory, lock_manager, redis_lock_manager

REPO = Path(__file__).resolve().parents[1]


def _holder(code: str) -> subprocess.Popen:
    """A child process that takes a lock, says so on stdout, then sleeps until killed."""
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def _wait_line(proc: subprocess.Popen, expected: str) -> None:
    line = proc.stdout.readline().strip()
    assert line == expected, line


def test_lock_directory_is_under_a_local_prefix_and_per_prefix_elsewhere(tmp_path):
    assert lock_directory(str(tmp_path / "out")) == tmp_path / "out" / ".locks"
    assert lock_directory(f"file://{tmp_path}/out") == tmp_path / "out" / ".locks"
    a, b = lock_directory("s3://bucket/a"), lock_directory("s3://bucket/b")
    assert a != b and a.parent == b.parent and "plantcad-flows" in str(a)
    assert isinstance(lock_manager(str(tmp_path), "file"), FileLockManager)


def test_file_lock_excludes_other_processes_and_dies_with_its_holder(tmp_path):
    manager = FileLockManager(tmp_path / "locks")
    child = _holder(
        f"""
        import time
        from tasks.locks import FileLockManager
        m = FileLockManager({str(tmp_path / "locks")!r})
        assert m.acquire_lock("score_shard-abc", "child")
        print("held", flush=True)
        time.sleep(600)
        """
    )
    try:
        _wait_line(child, "held")
        assert manager.is_locked("score_shard-abc")
        assert not manager.acquire_lock("score_shard-abc", "me", acquire_timeout=0.5)
        assert manager.acquire_lock("other-key", "me", acquire_timeout=0.5)  # keys are independent
        manager.release_lock("other-key", "me")
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=10)
        # no expiry, no clean-up code: the kernel dropped the lock with the process
        assert manager.acquire_lock("score_shard-abc", "me", acquire_timeout=5)
        assert manager.is_lock_holder("score_shard-abc", "me")
        with pytest.raises(ValueError):
            manager.release_lock("score_shard-abc", "someone else")
        manager.release_lock("score_shard-abc", "me")
        assert not manager.is_locked("score_shard-abc")
    finally:
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGKILL)


def test_file_lock_excludes_threads_of_one_process_and_pickles_without_its_locks(tmp_path):
    import threading

    manager = FileLockManager(tmp_path / "locks")
    assert manager.acquire_lock("k", "thread-1")
    got = []
    t = threading.Thread(
        target=lambda: got.append(manager.acquire_lock("k", "thread-2", acquire_timeout=0.5))
    )
    t.start()
    t.join()
    assert got == [False]
    copy = pickle.loads(pickle.dumps(manager))  # as a task's cache policy travels to a Ray worker
    assert copy.directory == manager.directory and not copy.is_lock_holder("k", "thread-1")
    assert copy.is_locked("k")  # but it sees the lock held on disk
    manager.release_lock("k", "thread-1")
    assert copy.acquire_lock("k", "w", acquire_timeout=1)
    copy.release_lock("k", "w")


# ------------------------------------------------------------------ Redis


@pytest.fixture
def redis_url(tmp_path):
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    from fault_harness import start_redis
    from servers import stop

    url, proc = start_redis(tmp_path)
    yield url
    stop(proc)


def test_redis_lock_is_renewed_while_held_and_expires_after_its_holder_is_killed(redis_url):
    lease = 2.0
    child = _holder(
        f"""
        import time
        from tasks.locks import redis_lock_manager
        m = redis_lock_manager({redis_url!r})
        type(m).LEASE_S, type(m).RENEW_S = {lease}, {lease / 4}
        assert m.acquire_lock("finalize_cell-abc", "child")
        print("held", flush=True)
        time.sleep(600)
        """
    )
    try:
        _wait_line(child, "held")
        manager = redis_lock_manager(redis_url)
        # three leases later the live holder still has it: its lease is being renewed
        assert not manager.acquire_lock("finalize_cell-abc", "me", acquire_timeout=3 * lease)
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=10)
        t0 = time.monotonic()
        assert manager.acquire_lock("finalize_cell-abc", "me", acquire_timeout=5 * lease)
        waited = time.monotonic() - t0
        assert waited <= lease + 1.0, waited  # gone within one lease of the kill
        manager.release_lock("finalize_cell-abc", "me")
        assert not manager.is_locked("finalize_cell-abc")
        copy = pickle.loads(pickle.dumps(manager))
        assert copy.acquire_lock("finalize_cell-abc", "w", acquire_timeout=1)
        copy.release_lock("finalize_cell-abc", "w")
    finally:
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGKILL)


def test_unreachable_redis_is_one_line_without_the_password():
    url = f"redis://:hunter2secret@127.0.0.1:{free_port()}/0"
    with pytest.raises(StorageError) as e:
        redis_lock_manager(url)
    msg = str(e.value)
    assert "\n" not in msg and "hunter2secret" not in msg
    assert (
        msg.startswith("executor.locks='redis': no Redis at redis://127.0.0.1:")
        and "PLANTCAD_REDIS_URL" in msg
    )
