"""prefect.yaml without a server: every deployment's parameters are a valid EvalConfig, the local
demo matches configs/demo.yaml, pull steps name importable functions, anchors are used."""

from __future__ import annotations

import importlib
from pathlib import Path

import yaml

from plantcad_flows.config import EvalConfig, load_config

REPO = Path(__file__).resolve().parents[1]
SPEC_TEXT = (REPO / "prefect.yaml").read_text()
SPEC = yaml.safe_load(SPEC_TEXT)
EVAL_ENTRYPOINT = "flows/zero_shot_eval.py:zero_shot_eval"
COMMAND_ENTRYPOINT = "flows/run_command.py:run_command"
DEPLOYMENTS = {d["name"]: d for d in SPEC["deployments"] if d["entrypoint"] == EVAL_ENTRYPOINT}
RUN_COMMAND = {d["name"]: d for d in SPEC["deployments"] if d["entrypoint"] == COMMAND_ENTRYPOINT}


def test_four_deployments_on_three_pools():
    assert {n: d["work_pool"]["name"] for n, d in DEPLOYMENTS.items()} == {
        "local": "local",
        "kubernetes": "kubernetes",
        "lambda": "lambda",
        "nightly": "kubernetes",
    }
    for d in DEPLOYMENTS.values():
        assert d["entrypoint"] == "flows/zero_shot_eval.py:zero_shot_eval"
        assert d["enforce_parameter_schema"] is True
        EvalConfig.model_validate(d["parameters"]["config"])
    assert "definitions:" in SPEC_TEXT and SPEC_TEXT.count("*benchmark_config") >= 2


def test_local_demo_is_configs_demo_yaml_but_small():
    from plantcad_flows.config_paths import anchor_paths

    demo = load_config(REPO / "configs" / "demo.yaml")  # its paths are relative to configs/
    # the deployment runs in the repository root (its pull step's directory), beside prefect.yaml
    local = EvalConfig.model_validate(
        anchor_paths(DEPLOYMENTS["local"]["parameters"]["config"], REPO / "prefect.yaml")
    )
    assert local.models == demo.models
    assert local.splits == demo.splits
    assert local.sampling.max_size == 32 and local.compute.device == "cpu"
    assert not local.ray.enabled


def test_nightly_covers_every_split_on_a_schedule():
    from plantcad_flows.families import builtin_tasks

    TASKS = builtin_tasks()

    nightly = EvalConfig.model_validate(DEPLOYMENTS["nightly"]["parameters"]["config"])
    assert {(s.task, s.split) for s in nightly.splits} == {
        (t, s) for t, spec in TASKS.items() for s in spec.splits
    }
    [sched] = DEPLOYMENTS["nightly"]["schedules"]
    assert sched["cron"] == "0 2 * * *" and sched["timezone"]


def test_nightly_publishes_to_the_hub_with_a_secret_block_not_a_token():
    from deployments.setup import HF_SECRET_BLOCK

    nightly = EvalConfig.model_validate(DEPLOYMENTS["nightly"]["parameters"]["config"])
    assert nightly.publish is not None and nightly.publish.token_secret == HF_SECRET_BLOCK
    assert nightly.publish.repo_type == "dataset" and "{run}" in nightly.publish.path_in_repo
    # the other deployments publish nothing
    assert all(
        "publish" not in d["parameters"].get("config", {}) for n, d in DEPLOYMENTS.items() if n != "nightly"
    )


def test_pull_steps_are_importable():
    for d in DEPLOYMENTS.values():
        for step in d["pull"]:
            [(fqn, _)] = step.items()
            module, _, func = fqn.rpartition(".")
            assert callable(getattr(importlib.import_module(module), func)), fqn
    kinds = {n: [next(iter(s)) for s in d["pull"]] for n, d in DEPLOYMENTS.items()}
    assert kinds["lambda"][0] == "prefect.deployments.steps.git_clone"
    assert (
        DEPLOYMENTS["kubernetes"]["pull"][0]["prefect.deployments.steps.set_working_directory"]["directory"]
        == "/opt/plantcad-flows"
    )


def test_ensure_demo_data_step(tmp_path, monkeypatch):
    from deployments.steps import ensure_demo_data
    from plantcad_flows.benchmark.synthetic import MARKER

    monkeypatch.chdir(tmp_path)
    out = ensure_demo_data("data/synthetic")
    assert out == {"demo_data": str(tmp_path / "data" / "synthetic")}
    assert (tmp_path / "data" / "synthetic" / MARKER).exists()
    for s in DEPLOYMENTS["local"]["parameters"]["config"]["splits"]:
        assert (tmp_path / s["path"]).exists()


def test_run_command_on_every_pool_and_nothing_else():
    """Grid cells run as `run-command/<pool>`: one deployment per pool, sharing its pull steps."""
    assert {n: d["work_pool"]["name"] for n, d in RUN_COMMAND.items()} == {
        "local": "local",
        "kubernetes": "kubernetes",
        "lambda": "lambda",
    }
    assert len(SPEC["deployments"]) == len(DEPLOYMENTS) + len(RUN_COMMAND)
    for d in RUN_COMMAND.values():
        assert d["enforce_parameter_schema"] is True and "grid" in d["tags"]
        for step in d["pull"]:
            [(fqn, _)] = step.items()
            module, _, func = fqn.rpartition(".")
            assert callable(getattr(importlib.import_module(module), func)), fqn
    assert RUN_COMMAND["kubernetes"]["work_pool"] == DEPLOYMENTS["kubernetes"]["work_pool"]
    assert RUN_COMMAND["lambda"]["pull"] == DEPLOYMENTS["lambda"]["pull"]
    assert SPEC_TEXT.count("*run_command") == 3
