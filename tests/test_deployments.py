"""prefect.yaml end to end on a real Prefect server (SQLite, 127.0.0.1): `plantcad-flows setup`,
then the `local` deployment through a process worker, the `nightly` schedule, and the `lambda`
pool through infra/lambda/start-node.sh in single-node mode (its git_clone pull step clones a
snapshot of this working tree). Every process is started here and stopped by PID."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml
from servers import (
    REPO,
    RUN_TIMEOUT_S,
    api,
    completed_local_run,
    deployment_run,
    flow_run_logs,
    one_split_per_family,
    run_setup,
    stop,
    wait_for_flow_run,
)

pytestmark = pytest.mark.slow


def _deployments(stack) -> dict[str, dict]:
    return {d["name"]: d for d in api(stack.api_url, "POST", "/deployments/filter", {})}


def test_setup_creates_pools_and_deployments_and_never_prints_the_token(stack):
    assert stack.hf_token not in stack.setup_output
    assert stack.hf_token[::-1] not in stack.setup_output  # the AWS secret key
    assert "block hf-token: saved" in stack.setup_output
    assert "block plantcad-aws: saved" in stack.setup_output
    pools = {p["name"]: p for p in api(stack.api_url, "POST", "/work_pools/filter", {})}
    assert {n: pools[n]["type"] for n in ("local", "lambda", "kubernetes")} == {
        "local": "process",
        "lambda": "process",
        "kubernetes": "kubernetes",
    }
    k8s_vars = pools["kubernetes"]["base_job_template"]["variables"]["properties"]
    assert {"gpu_count", "gpu_products", "tolerations", "secret_env", "volumes"} <= set(k8s_vars)
    # The process pools reference the Secret block; the token itself is stored only in the block.
    env_default = pools["local"]["base_job_template"]["variables"]["properties"]["env"]["default"]
    assert env_default["HF_TOKEN"] == "{{ prefect.blocks.secret.hf-token }}"
    assert env_default["AWS_SECRET_ACCESS_KEY"] == (
        "{{ prefect.blocks.aws-credentials.plantcad-aws.aws_secret_access_key }}"
    )
    assert stack.hf_token not in json.dumps(pools) and stack.hf_token[::-1] not in json.dumps(pools)
    deps = _deployments(stack)
    assert set(deps) == {"local", "kubernetes", "lambda", "nightly"}
    assert all(d["enforce_parameter_schema"] for d in deps.values())
    assert stack.hf_token not in json.dumps(deps)
    variables = {v["name"]: v["value"] for v in api(stack.api_url, "POST", "/variables/filter", {})}
    assert variables["plantcad_flows_repo"] == str(stack.snapshot_repo)
    assert variables["plantcad_flows_ref"] == "main"


def test_setup_is_idempotent(stack):
    again = run_setup(
        stack.api_url,
        stack.tmp / "client-home",
        checkout=stack.snapshot_repo,
        HF_TOKEN=stack.hf_token,
        PLANTCAD_FLOWS_REPO=str(stack.snapshot_repo),
        PLANTCAD_FLOWS_REF="main",
    )
    out = again.stdout + again.stderr
    assert again.returncode == 0, out[-3000:]
    assert "work pool local (process): updated" in out
    assert stack.hf_token not in out
    assert set(_deployments(stack)) == {"local", "kubernetes", "lambda", "nightly"}


def test_nightly_has_its_cron_schedule(stack):
    nightly = _deployments(stack)["nightly"]
    assert nightly["work_pool_name"] == "kubernetes"
    [sched] = nightly["schedules"]
    assert sched["schedule"]["cron"] == "0 2 * * *"
    assert sched["schedule"]["timezone"] == "America/New_York"
    assert sched["active"]
    config = nightly["parameters"]["config"]
    assert len(config["splits"]) == 20 and all("path" not in s for s in config["splits"])


def test_parameter_schema_is_enforced(stack):
    proc = subprocess.run(
        [
            str(REPO / ".venv/bin/prefect"),
            "deployment",
            "run",
            "zero-shot-eval/local",
            "--params",
            json.dumps({"config": {"models": [], "splitz": []}}),
        ],
        cwd=stack.tmp,
        env=stack.env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode != 0
    assert "validation" in (proc.stdout + proc.stderr).lower()


def test_local_deployment_completes_with_results(stack):
    """The run (servers.completed_local_run) takes one split per family of the deployment's own
    default config; the whole default is what prefect.yaml says and is a valid flow config."""
    from plantcad_flows.config import EvalConfig

    default = api(stack.api_url, "GET", "/deployments/name/zero-shot-eval/local")["parameters"]["config"]
    demo = yaml.safe_load((REPO / "prefect.yaml").read_text())["definitions"]["configs"]["demo"]
    assert default == demo
    assert len(EvalConfig.model_validate(default).splits) == 20
    run = completed_local_run(stack)
    assert run["parameters"]["config"]["splits"] == one_split_per_family(default)["splits"]
    logs = flow_run_logs(stack.api_url, run["id"])
    assert run["state_type"] == "COMPLETED", logs[-5000:]
    artifacts = api(
        stack.api_url, "POST", "/artifacts/filter", {"artifacts": {"flow_run_id": {"any_": [run["id"]]}}}
    )
    keys = {a["key"] for a in artifacts}
    # keys are scoped by the config: zero-shot-{kind}-{scope}
    assert {"results", "summary", "pivot"} <= {k.split("-")[2] for k in keys if k.startswith("zero-shot-")}
    table = next(a for a in artifacts if a["key"].startswith("zero-shot-results-"))["data"]
    rows = json.loads(table) if isinstance(table, str) else table
    assert len(rows) > 0
    results = sorted(
        (stack.snapshot_repo / "outputs" / "deployments" / "runs" / run["name"]).glob("results.*")
    )
    assert results, f"no results files for run {run['name']}"


def test_job_variable_override_reaches_the_run(stack):
    """`--job-variable` on a process pool: an env var the flow run's process sees."""
    completed_local_run(stack)  # a worker is running
    demo = yaml.safe_load((REPO / "prefect.yaml").read_text())["definitions"]["configs"]["demo"]
    small = dict(demo, splits=demo["splits"][:1])  # --param overrides the default config too
    run_id = deployment_run(
        stack,
        "zero-shot-eval/local",
        "--params",
        json.dumps({"config": small}),
        "--job-variable",
        "env=" + json.dumps({"PLANTCAD_MARKER": "from-job-variable"}),
    )
    run = wait_for_flow_run(stack.api_url, run_id, RUN_TIMEOUT_S)
    assert run["state_type"] == "COMPLETED", flow_run_logs(stack.api_url, run_id)[-3000:]
    assert run["job_variables"]["env"]["PLANTCAD_MARKER"] == "from-job-variable"
    assert len(run["parameters"]["config"]["splits"]) == 1


def test_lambda_pool_through_start_node_single_node(stack, synthetic_dir, tmp_path):
    """The node start script runs the `lambda` worker; its pull step clones the snapshot repo."""
    data = synthetic_dir  # the demo's tasks, 16 examples each
    local_config = yaml.safe_load((REPO / "prefect.yaml").read_text())["definitions"]["configs"]["demo"]
    config = json.loads(json.dumps(local_config))
    for m in config["models"]:
        m["path"] = str(REPO / m["path"])
    config["splits"] = [
        dict(s, path=str(data / s["task"] / f"{s['split']}.parquet")) for s in config["splits"][:2]
    ]
    config["executor"]["prefix"] = str(tmp_path / "outputs")
    log = open(tmp_path / "start-node.log", "ab")
    node = subprocess.Popen(
        ["bash", str(REPO / "infra/lambda/start-node.sh"), "--single-node", "--pool", "lambda"],
        cwd=tmp_path,
        env=dict(stack.env, PLANTCAD_VENV=sys.prefix),
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        run_id = deployment_run(stack, "zero-shot-eval/lambda", "--params", json.dumps({"config": config}))
        run = wait_for_flow_run(stack.api_url, run_id, RUN_TIMEOUT_S, alive=[node])
        logs = flow_run_logs(stack.api_url, run_id)
        assert run["state_type"] == "COMPLETED", logs[-5000:]
        assert "git_clone" in logs
        assert list((tmp_path / "outputs" / "runs" / run["name"]).glob("results.*"))
    finally:
        stop(node)
