"""Runs on one host shared with a colleague: whose Prefect server a run uses, and for how long.

Two CLI runs on one port, the second started while the first's server is up and the first ending
first, both finish; a server that loses its port between the check and the bind is not mistaken
for the server that took it; `plantcad-flows server --port N` serves a UI that talks to N.
"""

from __future__ import annotations

import http.server
import json
import os
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

import pytest
import yaml
from conftest import eval_config
from fault_harness import kill_leftovers, metrics_by_cell, start_eval
from servers import CLI, REPO, seeded_home_env, stop

from plantcad_flows.cluster.processes import free_port, listens_on
from plantcad_flows.services import prefect_server
from plantcad_flows.services.prefect_server import api_healthy, prefect_api
from plantcad_flows.services.server_records import read_record, record_path, remove_record, write_record


@pytest.fixture(autouse=True)
def _no_cli_left_running():
    yield
    kill_leftovers()


def _env(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(seeded_home_env(home), PREFECT_SERVER_ANALYTICS_ENABLED="false", HF_HUB_OFFLINE="1", **extra)
    return env


def _wait(condition, timeout: float, what: str, proc=None) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        detail = proc.output()[-3000:] if proc is not None else ""
        assert time.monotonic() < deadline, f"{what} within {timeout:.0f}s\n{detail}"
        if proc is not None:
            assert proc.popen.poll() is None, f"{what}: the command exited\n{detail}"
        time.sleep(0.2)


def test_two_runs_on_one_port_both_finish(small_models, synthetic_dir, tmp_path):
    """Run B starts while run A's server answers on the port they both name; A ends first and stops
    its server; B, which started a private server instead of borrowing A's, is unaffected."""
    port = free_port()
    configs = {}
    for name in ("a", "b"):
        configs[name] = tmp_path / f"{name}.yaml"
        configs[name].write_text(
            yaml.safe_dump(eval_config(small_models, synthetic_dir, tmp_path / f"out-{name}"))
        )
    a = start_eval(
        configs["a"], tmp_path, _env(tmp_path / "home-a"), "--server-port", str(port), "--no-ray",
        "--only", "mlm/conservation", "--results-json", str(tmp_path / "a.json"), log_name="a",
    )  # fmt: skip
    _wait(lambda: "started a Prefect server" in a.output(), 240, "run A's server", a)
    assert api_healthy(f"http://127.0.0.1:{port}/api")
    # a short bound: a run that had borrowed A's server would end (exit 3) soon after A
    b = start_eval(
        configs["b"], tmp_path, _env(tmp_path / "home-b", PLANTCAD_API_LOST_AFTER="8"),
        "--server-port", str(port), "--no-ray", "--results-json", str(tmp_path / "b.json"), log_name="b",
    )  # fmt: skip
    _wait(lambda: "this run starts a private one" in b.output(), 120, "run B's choice of server", b)
    a.popen.wait(timeout=600)
    assert a.popen.returncode == 0, a.output()[-4000:]
    assert b.popen.poll() is None, "run B ended before run A: the test did not test the overlap"
    assert not api_healthy(f"http://127.0.0.1:{port}/api")  # A stopped the server it started
    b.popen.wait(timeout=600)
    assert b.popen.returncode == 0, b.output()[-4000:]
    out_b = b.output()
    assert f"127.0.0.1:{port}" in out_b and "belongs to another run" in out_b
    ma, mb = metrics_by_cell(tmp_path / "a.json"), metrics_by_cell(tmp_path / "b.json")
    assert len(ma) == 1 and len(mb) == 5 and ma.items() <= mb.items()
    assert read_record(port) is None


class _Foreign(http.server.BaseHTTPRequestHandler):
    """Another process's server: answers every request with 200."""

    def do_GET(self):  # noqa: N802 (the http.server name)
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"true")

    def log_message(self, *args):
        pass


def test_port_taken_between_check_and_bind_is_not_mistaken_for_ours(tmp_path, monkeypatch, capsys):
    """The port is free when checked and taken by another server before this command's server
    binds it: the other server answers /health, but the run neither uses it nor calls it its own;
    it says so and starts its server on a free port."""
    port = free_port()
    foreign: list[http.server.HTTPServer] = []
    real_port_free = prefect_server.port_free

    def taken_right_after_the_check(p: int, *a) -> bool:
        free = real_port_free(p, *a)
        if p == port and not foreign:
            foreign.append(http.server.HTTPServer(("127.0.0.1", port), _Foreign))
            threading.Thread(target=foreign[0].serve_forever, daemon=True).start()
        return free

    monkeypatch.setattr(prefect_server, "port_free", taken_right_after_the_check)
    for k, v in seeded_home_env(tmp_path / "home").items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    try:
        with prefect_api(
            home=os.environ["PREFECT_HOME"], log_path=tmp_path / "server.log", port=port
        ) as server:
            assert foreign and api_healthy(f"http://127.0.0.1:{port}/api")  # the other one answers
            assert server.process is not None and not server.api_url.endswith(f":{port}/api")
            new_port = int(server.api_url.rsplit(":", 1)[1].split("/")[0])
            assert listens_on(new_port, [server.process.pid, *prefect_server.descendants(server.process.pid)])
            record = read_record(new_port)
            assert record is not None and record.pid == server.process.pid and not record.outlives_owner
        out = capsys.readouterr().out
        assert f"port {port} was taken by another process" in out, out
        assert f"started a Prefect server for this run at {server.ui_url}" in out, out
        assert read_record(new_port) is None  # removed with the server
    finally:
        for f in foreign:
            f.shutdown()
            f.server_close()


def test_a_recorded_shared_server_is_used_and_a_stale_record_is_ignored(tmp_path, monkeypatch, capsys):
    """A server recorded as outliving its starter (`plantcad-flows server`) is shared; a record
    whose process is gone counts as no record."""
    port = free_port()
    foreign = http.server.HTTPServer(("127.0.0.1", port), _Foreign)
    threading.Thread(target=foreign.serve_forever, daemon=True).start()
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    try:
        gone = subprocess.Popen(["true"])
        gone.wait()
        stale = write_record(port, gone.pid, False, "a run")
        assert stale is not None and read_record(port) is None
        shared = write_record(port, os.getpid(), True, "plantcad-flows server")
        with prefect_api(port=port) as server:
            assert server.process is None and server.api_url == f"http://127.0.0.1:{port}/api"
        out = capsys.readouterr().out
        assert f"started by plantcad-flows server, pid {os.getpid()}; shared" in out, out
        remove_record(shared)
        assert not record_path(port).exists()
    finally:
        foreign.shutdown()
        foreign.server_close()


def test_server_port_n_serves_a_ui_that_talks_to_n(tmp_path):
    port = free_port()
    env = _env(tmp_path / "home", PYTHONPATH=str(REPO))
    proc = subprocess.Popen(
        [str(CLI), "server", "--port", str(port)],
        env=env,
        stdout=open(tmp_path / "server.log", "wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        _wait(lambda: api_healthy(f"http://127.0.0.1:{port}/api"), 240, "the server")
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/ui-settings", timeout=10) as r:
            settings = json.load(r)
        assert settings["api_url"] == f"http://127.0.0.1:{port}/api", settings
        record = read_record(port)
        assert record is not None and record.pid == proc.pid and record.outlives_owner
    finally:
        stop(proc)
