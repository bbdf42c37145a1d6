"""Joining with `ray://`: transient initialisation failures are retried with backoff for a bounded
time; an address that never joins still fails, on one line naming `ray.address`.

The transient failure seen in CI ("Initialization failure from server ... psutil.ZombieProcess":
the client proxy's per-client server died) cannot be produced on demand, so the retry schedule
is tested by making `ray.init` raise Ray's own error for it twice. The bounded failure is real:
Ray's client against a port that accepts and drops every connection.
"""

from __future__ import annotations

import socket
import threading
import time

import pytest

from plantcad_flows.cluster import ray_client
from plantcad_flows.config import parse_address
from plantcad_flows.errors import ValidationError

ZOMBIE = (
    "Initialization failure from server:\nTraceback (most recent call last):\n"
    '  File "proxier.py", line 700, in Datapath\n'
    "psutil.ZombieProcess: PID still exists but it's a zombie (pid=4242)"
)


@pytest.fixture
def fake_ray(monkeypatch):
    """`ray.init` failing as the client proxy does, a given number of times; sleeps recorded."""
    import ray

    calls: dict = {"init": 0, "fail": 0, "sleeps": []}

    def init(address=None, **kwargs):
        calls["init"] += 1
        calls["address"] = address
        if calls["init"] <= calls["fail"]:
            raise ConnectionAbortedError(ZOMBIE)

    monkeypatch.setattr(ray, "init", init)
    monkeypatch.setattr(ray, "shutdown", lambda: None)
    monkeypatch.setattr(time, "sleep", lambda s: calls["sleeps"].append(s))
    return calls


def test_transient_client_failures_are_retried_with_backoff(fake_ray):
    fake_ray["fail"] = 3
    addr = parse_address("ray://head:10001")
    ray_client._init_with_retries(addr, "ray://head:10001", {}, budget=60)
    assert fake_ray["init"] == 4 and fake_ray["address"] == "ray://head:10001"
    assert fake_ray["sleeps"] == [0.5, 1.0, 2.0]


def test_retries_stop_at_the_budget_with_one_line(fake_ray, monkeypatch):
    fake_ray["fail"] = 10**6
    clock = [0.0]
    monkeypatch.setattr(time, "monotonic", lambda: clock[0])
    monkeypatch.setattr(
        time, "sleep", lambda s: (fake_ray["sleeps"].append(s), clock.__setitem__(0, clock[0] + s))
    )
    with pytest.raises(ValidationError) as e:
        ray_client._init_with_retries(parse_address("ray://head:10001"), "ray://head:10001", {}, budget=20)
    msg = str(e.value)
    assert "\n" not in msg
    assert msg.startswith("ray.address='ray://head:10001': cannot join the Ray cluster after 6 attempt(s)")
    assert "Initialization failure from server: ... psutil.ZombieProcess" in msg
    assert fake_ray["sleeps"] == [0.5, 1.0, 2.0, 4.0, 8.0]  # 15.5 s; the next 8 s would pass 20


def test_gcs_addresses_are_not_retried(fake_ray):
    fake_ray["fail"] = 1
    with pytest.raises(ValidationError, match=r"after 1 attempt\(s\)"):
        ray_client._init_with_retries(parse_address("10.0.0.5:6379"), "10.0.0.5:6379", {}, budget=60)
    assert fake_ray["sleeps"] == []


@pytest.mark.slow
def test_an_address_that_never_joins_fails_in_bounded_time(monkeypatch):
    """A real Ray client against a port that drops every connection: a real failure is not hidden
    by the retries, it is reported once the budget is spent."""
    import ray.util.client.worker as client_worker

    monkeypatch.setattr(client_worker, "INITIAL_TIMEOUT_SEC", 1)
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)
    stop = threading.Event()

    def drop_all():
        srv.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
                conn.close()
            except OSError:
                pass

    t = threading.Thread(target=drop_all, daemon=True)
    t.start()
    address = f"ray://127.0.0.1:{srv.getsockname()[1]}"
    t0 = time.monotonic()
    try:
        with pytest.raises(ValidationError) as e:
            ray_client.connect(address, join_retry_s=2)
    finally:
        stop.set()
        t.join(timeout=5)
        srv.close()
    elapsed = time.monotonic() - t0
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(f"ray.address={address!r}: cannot join the Ray cluster after")
    assert "no local instance was started" in msg
    import ray

    assert not ray.is_initialized()
    print(f"failed after {elapsed:.1f}s: {msg}")
