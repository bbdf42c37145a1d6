"""infra/lambda: the SkyPilot cluster spec and the node start script's argument handling.

SkyPilot is not a project dependency (it pulls in every cloud SDK). It does install cleanly into
a separate virtualenv (`python -m venv /tmp/sky && /tmp/sky/bin/pip install skypilot`); point
SKYPILOT_PYTHON at that interpreter and the spec is also parsed by `sky.Task.from_yaml`.
Without it the structure is checked here. The start script running a real `lambda` worker is in
test_deployments.py (it needs the Prefect server there).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
SPEC = REPO / "infra" / "lambda" / "cluster.sky.yaml"
START = REPO / "infra" / "lambda" / "start-node.sh"


@pytest.fixture(scope="module")
def spec() -> dict:
    return yaml.safe_load(SPEC.read_text())


def test_spec_structure(spec):
    allowed = {"name", "resources", "num_nodes", "workdir", "envs", "setup", "run", "file_mounts"}
    assert set(spec) <= allowed
    res = spec["resources"]
    assert res["cloud"] == "lambda"
    gpu, _, count = res["accelerators"].partition(":")
    assert gpu and int(count) >= 1
    assert int(res["disk_size"]) >= 100
    assert int(spec["num_nodes"]) >= 1
    assert spec["workdir"] == "."
    assert {"PREFECT_API_URL", "WORK_POOL", "HF_TOKEN"} <= set(spec["envs"])
    assert spec["envs"]["WORK_POOL"] == "lambda"
    # setup installs the project, with its GPU extra
    assert 'install -q -e ".[gpu]"' in spec["setup"]
    # the head comes from the setup node list (the run list may omit it) ...
    assert "SKYPILOT_SETUP_NODE_IPS" in spec["setup"] and "head -n1" in spec["setup"]
    assert "SKYPILOT_NODE_IPS" not in spec["run"]
    # ... and the run step starts Ray + the Prefect worker there, Ray workers elsewhere
    assert "start-node.sh --role head" in spec["run"] and "--role worker" in spec["run"]


def test_spec_steps_are_valid_bash(spec):
    for step in ("setup", "run"):
        proc = subprocess.run(["bash", "-n"], input=spec[step], text=True, capture_output=True)
        assert proc.returncode == 0, f"{step}: {proc.stderr}"


def _skypilot_python() -> str | None:
    path = os.environ.get("SKYPILOT_PYTHON")
    return path if path and Path(path).exists() else None


@pytest.mark.skipif(_skypilot_python() is None, reason="SKYPILOT_PYTHON (a venv with skypilot) not set")
def test_skypilot_loader_accepts_the_spec():
    code = (
        "import json, sys, sky\n"
        "t = sky.Task.from_yaml(sys.argv[1])\n"
        "r = list(t.resources)[0]\n"
        "print(json.dumps({'nodes': t.num_nodes, 'acc': r.accelerators, 'cloud': str(r.cloud),"
        " 'disk': r.disk_size}))\n"
    )
    out = subprocess.run(
        [_skypilot_python(), "-c", code, str(SPEC)], capture_output=True, text=True, timeout=300, check=True
    ).stdout
    got = json.loads(out.strip().splitlines()[-1])
    assert got == {"nodes": 1, "acc": {"A10": 1}, "cloud": "Lambda", "disk": 256}


@pytest.mark.parametrize(
    "args, message",
    [
        ([], "--role must be head or worker"),
        (["--role", "worker"], "--head-address is required"),
        (["--single-node", "--bogus"], "unknown argument --bogus"),
    ],
)
def test_start_node_rejects_bad_arguments(args, message):
    proc = subprocess.run(
        ["bash", str(START), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": os.environ["PATH"], "PLANTCAD_VENV": sys.prefix},
    )
    assert proc.returncode == 2 and message in proc.stderr


def test_start_node_needs_a_server_url():
    env = {"PATH": os.environ["PATH"], "PLANTCAD_VENV": sys.prefix}
    proc = subprocess.run(
        ["bash", str(START), "--single-node"], capture_output=True, text=True, timeout=60, env=env
    )
    assert proc.returncode == 2 and "PREFECT_API_URL is not set" in proc.stderr
