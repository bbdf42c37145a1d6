"""Regression alerts end to end: a real Prefect server, `plantcad-flows setup` creating the
automation, an HTTP receiver on loopback standing in for the webhook (http.server in a thread),
and checkpoints scored by the real flow.

* two checkpoints, the second clearly worse: the receiver gets exactly one POST per regressed
  cell (a cell whose paired bootstrap interval of the difference lies below zero), naming it;
* a re-run with nothing new sends nothing;
* a third checkpoint whose difference from the best so far is inside the noise sends nothing;
* without PLANTCAD_ALERT_WEBHOOK the automation exists, disabled, with a note.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest
from servers import VENV_BIN, client_env

from plantcad_flows.benchmark.checkpoints import TINY_MLM, WEIGHTS, write_checkpoint
from plantcad_flows.benchmark.synthetic import build_split
from plantcad_flows.config import EvalConfig
from plantcad_flows.families import get_task
from plantcad_flows.results.bootstrap import paired_difference
from plantcad_flows.results.history import read_predictions
from plantcad_flows.results.regression import EVENT

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]
SPLITS = (("conservation_within_andropogoneae", "test"), ("donor_recovery", "test_maize"))
BOOTSTRAP = {"bootstrap": 500, "seed": 0}


class Receiver:
    """A webhook endpoint on 127.0.0.1 that keeps every POST body."""

    def __init__(self):
        self.posts: list[dict] = []
        received = self.posts

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                received.append(json.loads(body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_port}/alerts"

    def settled(self, since, automation_id, timeout: float = 120) -> tuple[int, list[dict]]:
        """(regression events on the server since `since`, the POSTs received), once every event
        this process emitted is on the server and the automation has acted on each of them.

        Read through the API, never by sleeping: a marker event sent after the runs' own events
        (one connection, in order) shows that they have all arrived; then each regression event
        has its `action.executed` (or `.failed`) event, and its POST came before that.
        """
        from uuid import uuid4

        from prefect import get_client
        from prefect.events import emit_event
        from prefect.events.filters import EventFilter, EventNameFilter, EventOccurredFilter
        from prefect.events.worker import EventsWorker
        from prefect.types._datetime import now

        marker = emit_event(
            "plantcad.test.settle", resource={"prefect.resource.id": f"plantcad.test.{uuid4()}"}
        )
        EventsWorker.drain_all(timeout=60, at_exit=False)  # sent, not just queued
        acted_names = ["prefect.automation.action.executed", "prefect.automation.action.failed"]
        names = EventNameFilter(name=[EVENT, "plantcad.test.settle", *acted_names])
        deadline = time.monotonic() + timeout
        while True:
            window = EventOccurredFilter(since=since, until=now("UTC") + dt.timedelta(hours=1))
            with get_client(sync_client=True) as client:
                events = client.read_events(EventFilter(occurred=window, event=names), limit=50).events
            regressions = [e for e in events if e.event == EVENT]
            acted = [e for e in events if e.event in acted_names and str(automation_id) in e.resource.id]
            arrived = any(e.id == marker.id for e in events)
            if arrived and len(acted) >= len(regressions) and len(self.posts) >= len(regressions):
                return len(regressions), list(self.posts)
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"marker seen: {arrived}; {len(regressions)} regression events, "
                    f"{len(acted)} actions, {len(self.posts)} POSTs"
                )
            time.sleep(0.5)

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def setup_no_deploy(api_url: str, home: Path, **env: str) -> subprocess.CompletedProcess:
    """`plantcad-flows setup --no-deploy` (pools, blocks, variables, the alert automation)."""
    return subprocess.run(
        [str(VENV_BIN / "plantcad-flows"), "setup", "--no-deploy", "--env-file", str(home / "no.env")],
        cwd=REPO,
        env=client_env(api_url, home, **env),
        capture_output=True,
        text=True,
        timeout=300,
    )


def write_noisy_checkpoint(run_dir: Path, step: int, sigma: float, seed: int) -> Path:
    """The shipped model with N(0, sigma) added to every weight matrix (norms and biases kept),
    written under a temporary name and renamed, as a finished upload appears."""
    import numpy as np
    from safetensors.numpy import load_file, save_file

    tmp, final = run_dir / f".step-{step}.tmp", run_dir / f"step-{step}"
    shutil.copytree(TINY_MLM, tmp)
    rng = np.random.default_rng(seed)
    weights = {
        k: v + rng.normal(0, sigma, v.shape).astype(v.dtype) if v.ndim >= 2 else v
        for k, v in load_file(str(TINY_MLM / WEIGHTS)).items()
    }
    save_file(weights, str(tmp / WEIGHTS), metadata={"format": "pt"})
    tmp.rename(final)
    return final


def automation(name: str = "plantcad-eval-regression"):
    from prefect import get_client

    with get_client(sync_client=True) as client:
        (found,) = client.read_automations_by_name(name)
    return found


def _run(cfg: dict):
    from flows.zero_shot_eval import zero_shot_eval

    state = zero_shot_eval(EvalConfig.model_validate(cfg), return_state=True)
    assert state.is_completed(), state.message
    return {r["cell_id"]: r for r in state.result()}


def _pair(results: dict, old: str, new: str, task: str, split: str):
    metric = get_task(task).family_object.main_metric
    a, b = results[f"{old}/{task}/{split}"], results[f"{new}/{task}/{split}"]
    family = get_task(task).family_object
    return paired_difference(
        family,
        metric,
        read_predictions(a["output_dir"]),
        read_predictions(b["output_dir"]),
        BOOTSTRAP["bootstrap"],
        BOOTSTRAP["seed"],
    )


def test_setup_without_webhook_creates_a_disabled_automation(prefect_server, tmp_path):
    proc = setup_no_deploy(prefect_server, tmp_path / "home")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert "automation plantcad-eval-regression: " in out and "disabled" in out
    assert "note: disabled: PLANTCAD_ALERT_WEBHOOK is not set" in out
    found = automation()
    assert not found.enabled and "PLANTCAD_ALERT_WEBHOOK is not set" in found.description
    assert found.trigger.expect == {"plantcad.eval.regression"}


def test_regression_alerts_reach_the_webhook(prefect_server, tmp_path):
    receiver = Receiver()
    try:
        proc = setup_no_deploy(prefect_server, tmp_path / "home", PLANTCAD_ALERT_WEBHOOK=receiver.url)
        out = proc.stdout + proc.stderr
        assert proc.returncode == 0, out[-3000:]
        assert "automation plantcad-eval-regression: " in out and "enabled" in out
        assert receiver.url not in out  # the URL is a secret: kept in a Webhook block, never printed
        found = automation()
        assert found.enabled and found.actions[0].type == "call-webhook"
        since = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=5)

        data = tmp_path / "data"
        for task, split in SPLITS:
            (data / task).mkdir(parents=True)
            build_split(task, split, seed=0, n_examples=100).to_parquet(data / task / f"{split}.parquet")
        run_dir = tmp_path / "training-run"
        write_checkpoint(run_dir, 1000, final_step=1000)  # the shipped model
        write_checkpoint(run_dir, 2000, final_step=8000)  # a quarter of it: clearly worse
        cfg = {
            "checkpoints": [{"path": str(run_dir), "name": "reg-run", "type": "mlm", "context_length": 512}],
            "splits": [{"task": t, "split": s, "path": str(data / t / f"{s}.parquet")} for t, s in SPLITS],
            "compute": {"device": "cpu", "batch_size": 16},
            "metrics": BOOTSTRAP,
            "executor": {"prefix": str(tmp_path / "out")},
            "ray": {"enabled": False, "num_shards": 1},
        }
        results = _run(cfg)

        # the expected alerts, from the two revisions' predictions on disk
        expected = set()
        for task, split in SPLITS:
            d = _pair(results, "reg-run@step-1000", "reg-run@step-2000", task, split)
            if d.is_drop:
                expected.add(f"reg-run@step-2000/{task}/{split}")
        assert "reg-run@step-2000/donor_recovery/test_maize" in expected  # motif accuracy collapses

        sent, posts = receiver.settled(since, found.id)
        assert sent == len(expected) == len(posts), (sent, posts)
        cells = [p["cell"] for p in posts]
        assert sorted(cells) == sorted(expected)  # exactly one POST per regressed cell
        for post in posts:
            payload = post["payload"]
            assert post["event"] == "plantcad.eval.regression" and payload["cell"] == post["cell"]
            assert payload["model"] == "reg-run@step-2000" and payload["old_model"] == "reg-run@step-1000"
            assert payload["new_revision"] and payload["old_revision"]
            assert payload["new_revision"] != payload["old_revision"]
            task = payload["task"]
            assert payload["metric"] == get_task(task).family_object.main_metric
            old = results[f"reg-run@step-1000/{task}/{payload['split']}"]["metrics"][payload["metric"]]
            new = results[post["cell"]]["metrics"][payload["metric"]]
            assert payload["old_value"] == pytest.approx(old) and payload["new_value"] == pytest.approx(new)
            low, high = payload["interval"]
            assert low <= payload["difference"] <= high < 0

        # nothing new: nothing scored, nothing sent
        again = _run(cfg)
        assert {r["status"] for r in again.values()} == {"cached"}
        assert receiver.settled(since, found.id) == (len(expected), posts)

        # a third checkpoint: the best (step 1000) with a little noise on its weights; far better
        # than its predecessor, and a difference from the best that is inside the noise
        write_noisy_checkpoint(run_dir, 3000, sigma=0.005, seed=1)
        third = _run(cfg)
        for task, split in SPLITS:
            d = _pair(third, "reg-run@step-1000", "reg-run@step-3000", task, split)
            assert d.diff != 0 and not d.is_drop, (task, d)
            assert not _pair(third, "reg-run@step-2000", "reg-run@step-3000", task, split).is_drop
        assert receiver.settled(since, found.id) == (len(expected), posts)
    finally:
        receiver.close()
