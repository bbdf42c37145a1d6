"""The grid lifecycle without a server: resubmission decisions, status tables, pickup, secrets,
per-cell Kubernetes Jobs (rendered by prefect-kubernetes and validated), a cell's command
(streaming, redaction, stopping its process group) and the CLI's dry runs and bad specs.

Every expected value is worked out by hand from the small grids written here.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from plantcad_flows.cluster.commands import open_workspace, run_streaming
from plantcad_flows.grid.collect import combine
from plantcad_flows.grid.expand import expand_grid
from plantcad_flows.grid.runs import (
    RunRecord,
    decide,
    format_plan,
    format_status,
    latest_by_cell,
    summarize,
)
from plantcad_flows.grid.secret_env import block_reference, cell_secret_names, with_secrets
from plantcad_flows.grid.spec import parse_grid

REPO = Path(__file__).resolve().parents[1]
CLI = Path(sys.executable).parent / "plantcad-flows"
K8S_VERSION = "1.33"
DEAD_API = "http://127.0.0.1:9/api"  # nothing listens on the discard port: "no server"
T0 = dt.datetime(2026, 1, 1, 12, 0, tzinfo=dt.UTC)


def spec(**root) -> dict:
    base = {
        "project": "lab",
        "prefix": "s3://bucket/runs",
        "models": {"m": {"command": "train --lr <lr>", "hparam": {"lr": [1, 2, 3]}}},
        "datasets": {"d": {}},
    }
    return base | root


def cells_of(data: dict, **kwargs):
    return expand_grid(parse_grid(data), **kwargs)


def run(cell: str, state: str, minutes: int = 0, name: str | None = None, **kw) -> RunRecord:
    return RunRecord(
        id=f"{cell}-{minutes}",
        name=name or cell,
        cell=cell,
        state_type=state.upper(),
        state_name=state.capitalize(),
        created=T0 + dt.timedelta(minutes=minutes),
        **kw,
    )


# --- resubmission --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "state, submit",
    [
        ("completed", False),
        ("running", False),
        ("pending", False),
        ("scheduled", False),
        ("cancelling", False),
        ("failed", True),
        ("crashed", True),
        ("cancelled", True),
    ],
)
def test_latest_state_decides_whether_a_cell_is_resubmitted(state, submit):
    [cell] = cells_of(spec(models={"m": {"command": "x"}}))
    [d] = decide([cell], [run(cell.name, state)])
    assert d.submit is submit
    assert d.attempt == (2 if submit else 1)


def test_only_the_latest_run_counts_and_attempts_number_every_run():
    a, b, c = cells_of(spec())
    records = [
        run(a.name, "failed", 0),
        run(a.name, "completed", 5),  # the retry succeeded: skip
        run(b.name, "completed", 0),
        run(b.name, "failed", 5),  # completed once, failed since (e.g. --overwrite): resubmit
        run("lab-other-cell", "failed", 9),  # another grid's cell: ignored
        RunRecord("grid-run", "lab-1", None, "RUNNING", "Running", T0),  # the grid flow's own run
    ]
    decisions = {d.cell.name: d for d in decide([a, b, c], records)}
    assert not decisions[a.name].submit
    assert decisions[b.name].submit and decisions[b.name].attempt == 3
    assert decisions[b.name].idempotency_key == f"{b.name}-3"
    assert decisions[c.name].submit and decisions[c.name].attempt == 1
    assert decisions[c.name].idempotency_key == f"{c.name}-1"
    assert summarize(list(decisions.values())) == (
        "3 cells: 2 to submit (1 latest run Failed, 1 never ran), 1 skipped (1 latest run Completed)"
    )


def test_overwrite_resubmits_every_cell_with_a_new_key():
    cells = cells_of(spec())
    records = [run(c.name, "completed") for c in cells] + [run(cells[0].name, "running", 3)]
    decisions = decide(cells, records, overwrite=True)
    assert all(d.submit for d in decisions)
    assert [d.idempotency_key for d in decisions] == [
        f"{cells[0].name}-3",
        f"{cells[1].name}-2",
        f"{cells[2].name}-2",
    ]
    # keys never repeat an earlier run's: a resubmission cannot be swallowed by the server
    assert {d.idempotency_key for d in decisions}.isdisjoint({f"{c.name}-1" for c in cells})


def test_latest_is_the_most_recently_created_run():
    records = [run("x", "completed", 10), run("x", "failed", 20), run("x", "running", 15)]
    assert latest_by_cell(records)["x"].state_name == "Failed"


def test_status_table_and_summary_line():
    a, b, c = cells_of(spec())
    start = T0 + dt.timedelta(minutes=1)
    records = [
        run(a.name, "completed", start=start, end=start + dt.timedelta(seconds=65), worker="w1 (42)"),
        run(b.name, "failed", start=start, end=start + dt.timedelta(seconds=3)),
        run(b.name, "running", 2, start=start, worker="w2 (43)"),
    ]
    text = format_status([a, b, c], records, now=start + dt.timedelta(hours=1, minutes=2))
    lines = text.splitlines()
    assert lines[0].split() == ["cell", "state", "attempt", "start", "duration", "worker"]
    row_a = lines[1].split()
    assert row_a[:3] == [a.name, "Completed", "1"] and row_a[5] == "1m05s" and lines[1].endswith("w1 (42)")
    row_b = lines[2].split()
    assert row_b[:3] == [b.name, "Running", "2"] and row_b[5] == "1h02m"
    assert lines[3].split()[:3] == [c.name, "-", "0"]
    assert lines[-1] == "3 cells: 1 Completed, 1 Running, 1 not submitted"


def test_plan_line_has_name_target_resources_state_and_command():
    cells = cells_of(
        spec(models={"m": {"command": "train --lr <lr>", "hparam": {"lr": [1, 2, 3]}, "gpu_count": 2}})
    )
    text = format_plan(cells, latest_by_cell([run(cells[0].name, "completed")]))
    first = text.splitlines()[1]
    for part in (cells[0].name, "run-command/local", "gpu=2 cpu=4 mem=32Gi", "Completed", "train --lr 1"):
        assert part in first
    assert text.splitlines()[2].split()[6] == "-"  # never ran (after 4 resource fields)
    assert text.splitlines()[-1] == "3 cells (nothing submitted)"
    assert "state unknown" in format_plan(cells, None)


# --- pickup --------------------------------------------------------------------------------------


def test_pickup_combines_csv_json_and_parquet_with_hparams_as_columns(tmp_path):
    data = spec(
        models={"m": {"command": "x", "hparam": {"lr": [0.1, 0.2], "_data": "/d.parquet"}}},
        datasets={"d1": {}, "d2": {}},
    )
    c1, c2, c3, c4 = cells_of(data)
    for c in (c1, c2, c3):
        (tmp_path / c.name / "sub").mkdir(parents=True)
        (tmp_path / c.name / "_SUCCESS").write_text("{}")
        (tmp_path / c.name / ".step_info.json").write_text("{}")  # bookkeeping: never a result
    (tmp_path / c1.name / "metrics.json").write_text(json.dumps({"acc": 0.5, "lr": 0.1, "nested": {"f1": 1}}))
    (tmp_path / c2.name / "sub" / "rows.csv").write_text("step,loss\n1,2.0\n2,1.5\n")
    pd.DataFrame({"auc": [0.7], "lr": [9.9]}).to_parquet(tmp_path / c3.name / "scores.parquet")
    (tmp_path / c4.name).mkdir()  # outputs without _SUCCESS: incomplete, left out
    (tmp_path / c4.name / "metrics.json").write_text(json.dumps({"acc": 0.0}))

    table, missing = combine([c1, c2, c3, c4], tmp_path)
    assert missing == [c4.name]
    assert len(table) == 1 + 2 + 1
    assert list(table.columns[:6]) == ["cell", "model", "dataset", "file", "lr", "data"]
    assert table["cell"].tolist() == [c1.name, c2.name, c2.name, c3.name]
    assert table["dataset"].tolist() == ["d1", "d1", "d1", "d2"]  # model x dataset x lr order
    assert table["lr"].tolist() == [0.1, 0.2, 0.2, 0.1]
    assert set(table["data"]) == {"/d.parquet"}
    assert table["file"].tolist() == ["metrics.json", "sub/rows.csv", "sub/rows.csv", "scores.parquet"]
    assert table.loc[0, "nested.f1"] == 1 and table.loc[0, "acc"] == 0.5
    # the results' own `lr`: the same value as the cell's is dropped; a different one is kept aside
    assert table.loc[3, "lr.result"] == 9.9 and pd.isna(table.loc[0, "lr.result"])
    assert table["loss"].tolist()[1:3] == [2.0, 1.5]


# --- secrets -------------------------------------------------------------------------------------

PLANTED = "planted-" + "5ecret" * 4


def test_dotenv_secrets_are_references_never_values(tmp_path):
    from deployments.preview_job import load_template

    names = cell_secret_names({"WANDB_API_KEY": PLANTED, "PLAIN_SETTING": "x", "PREFECT_API_URL": "u"})
    assert names == ["PLAIN_SETTING", "WANDB_API_KEY"]  # PREFECT_* settings are not cell secrets
    base = load_template()["variables"]["properties"]["secret_env"]["default"]
    local = [with_secrets(c, names, base) for c in cells_of(spec(target="local"))]
    k8s = [with_secrets(c, names, base) for c in cells_of(spec(target="kubernetes"))]
    env = local[0].job_variables["env"]
    assert (
        env["WANDB_API_KEY"]
        == block_reference("WANDB_API_KEY")
        == ("{{ prefect.blocks.secret.dotenv-wandb-api-key }}")
    )
    assert env["CUDA_VISIBLE_DEVICES"] == ""
    refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in k8s[0].job_variables["secret_env"]}
    assert refs["WANDB_API_KEY"] == {"name": "plantcad-secrets", "key": "WANDB_API_KEY", "optional": True}
    assert {"HF_TOKEN", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} <= set(refs)  # pool defaults kept
    for cell in local + k8s:
        assert PLANTED not in cell.model_dump_json() and PLANTED not in cell.name


def test_a_secret_in_the_spec_is_rejected():
    from plantcad_flows.errors import ValidationError

    with pytest.raises(ValidationError, match="looks like a secret") as e:
        parse_grid(spec(resources={"env": {"WANDB_API_KEY": PLANTED}}))
    assert PLANTED not in str(e.value)


# --- Kubernetes Jobs, one per cell -----------------------------------------------------------------


def _cli(*args: str, cwd: Path = REPO, **env: str) -> subprocess.CompletedProcess:
    full = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    full.update(PREFECT_API_URL=DEAD_API, **env)
    return subprocess.run(
        [str(CLI), *args],
        cwd=cwd,
        env=full,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_every_cell_renders_a_valid_job_with_its_own_resources(tmp_path):
    grid = {
        "project": "k8s",
        "prefix": "s3://bucket/runs",
        "target": "kubernetes",
        "resources": {"memory": "16Gi", "image": "registry.example.org/lab/train:1", "cpu": 4},
        "models": {
            "big": {
                "command": "python train.py --lr <lr>",
                "gpu_count": 2,
                "memory": "128Gi",
                "gpu_allow": ["NVIDIA-A100-SXM4-80GB"],
                "hparam": {"lr": [1, 2]},
            },
            "swept": {"command": "python train.py", "gpu_count": 2, "hparam": {"_gpu_count": [1, 4]}},
        },
        "datasets": {
            "maize": {"pvc_mounts": {"plantcad-data": "/data"}, "cpu": 8, "tolerations": ["dedicated"]}
        },
    }
    (tmp_path / "grid.yaml").write_text(yaml.safe_dump(grid))
    (tmp_path / ".env").write_text(f"WANDB_API_KEY={PLANTED}\n")
    out = tmp_path / "jobs"
    proc = _cli("grid", "plan", "grid.yaml", "--manifests", str(out), "--validate", K8S_VERSION, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("(valid)") == 4, proc.stdout
    jobs = {p.stem: yaml.safe_load(p.read_text()) for p in out.glob("*.yaml")}
    cells = {c.name: c for c in cells_of(grid)}
    assert set(jobs) == set(cells)
    for name, job in jobs.items():
        cell = cells[name]
        pod = job["spec"]["template"]["spec"]
        container = pod["containers"][0]
        limits = container["resources"]["limits"]
        expected_gpus = cell.hparams.get("_gpu_count", 2)  # the hyper-parameter beats the model
        assert limits["nvidia.com/gpu"] == expected_gpus
        assert job["metadata"]["generateName"] == f"{name}-"
        assert job["metadata"]["labels"]["plantcad.io/cell"] == name
        assert job["metadata"]["labels"]["plantcad.io/grid"] == "k8s"
        assert container["image"] == "registry.example.org/lab/train:1"  # root layer
        assert limits["cpu"] == "8"  # the dataset beats the root
        assert pod["volumes"] == [
            {"name": "plantcad-data", "persistentVolumeClaim": {"claimName": "plantcad-data"}}
        ]
        assert container["volumeMounts"] == [{"name": "plantcad-data", "mountPath": "/data"}]
        assert {"key": "dedicated", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
        affinity = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
        gpu_rule = affinity["nodeSelectorTerms"][0]["matchExpressions"][0]
        if cell.model == "big":
            assert limits["memory"] == "128Gi"  # the model beats the root
            assert gpu_rule == {
                "key": "nvidia.com/gpu.product",
                "operator": "In",
                "values": ["NVIDIA-A100-SXM4-80GB"],
            }
        else:
            assert limits["memory"] == "16Gi"
            assert gpu_rule["operator"] == "NotIn"  # pool default: every node
        wandb = [e for e in container["env"] if e["name"] == "WANDB_API_KEY"]
        assert wandb == [
            {
                "name": "WANDB_API_KEY",
                "valueFrom": {
                    "secretKeyRef": {"name": "plantcad-secrets", "key": "WANDB_API_KEY", "optional": True}
                },
            }
        ]
        assert PLANTED not in json.dumps(job)
    assert PLANTED not in proc.stdout + proc.stderr


# --- a cell's command ----------------------------------------------------------------------------


def test_workspace_links_the_launch_directory_but_owns_outputs(tmp_path):
    launch = tmp_path / "checkout"
    (launch / "outputs").mkdir(parents=True)
    (launch / "outputs" / "old.json").write_text("{}")
    (launch / "train.py").write_text("print('hi')")
    (launch / "data").mkdir()
    a, b = open_workspace("cell-a", launch, base=tmp_path), open_workspace("cell-b", launch, base=tmp_path)
    try:
        assert a.root != b.root
        assert (a.root / "train.py").read_text() == "print('hi')" and (a.root / "data").is_dir()
        assert list(a.outputs.iterdir()) == [] and not a.outputs.is_symlink()
        (a.outputs / "m.json").write_text("1")
        assert not (b.outputs / "m.json").exists() and not (launch / "outputs" / "m.json").exists()
    finally:
        a.remove()
        b.remove()
    assert not a.root.exists() and (launch / "train.py").exists() and (launch / "data").is_dir()


def test_output_streams_line_by_line_with_secrets_redacted(tmp_path):
    seen: list[tuple[float, str]] = []
    env = dict(os.environ, MY_PASSWORD=PLANTED, OTHER=PLANTED[::-1])
    code = run_streaming(
        "echo one; sleep 1; echo $MY_PASSWORD >&2; echo $OTHER; exit 7",
        tmp_path,
        env,
        on_line=lambda line: seen.append((time.monotonic(), line)),
        secret_names=["OTHER"],
    )
    assert code == 7
    assert [line for _, line in seen] == ["one", "<redacted>", "<redacted>"]
    assert seen[1][0] - seen[0][0] > 0.5  # the first line arrived before the command finished


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    status = Path(f"/proc/{pid}/status")
    return not (status.exists() and "\nState:\tZ" in status.read_text())


def test_a_stopped_caller_stops_the_whole_process_group(tmp_path):
    pids = tmp_path / "pids"

    def stop_after_first_line(line: str) -> None:
        raise KeyboardInterrupt  # what a cancelled flow run's termination signal does

    with pytest.raises(KeyboardInterrupt):
        run_streaming(
            f"sleep 300 & echo $! > {pids}; sleep 300 & echo $! >> {pids}; echo started; wait",
            tmp_path,
            dict(os.environ),
            on_line=stop_after_first_line,
        )
    children = [int(p) for p in pids.read_text().split()]
    assert len(children) == 2
    deadline = time.monotonic() + 10
    while any(_alive(p) for p in children) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(_alive(p) for p in children)


# --- the CLI without a server ---------------------------------------------------------------------


def test_print_and_plan_without_a_server():
    proc = _cli("grid", "print", "configs/grid-example.yaml")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == 12 and all(line.startswith('python -c "import json') for line in lines)
    proc = _cli("grid", "plan", "configs/grid-example.yaml")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[-1] == "12 cells (state unknown: no Prefect server)"
    proc = _cli("grid", "status", "configs/grid-example.yaml")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1
    assert proc.stderr.startswith(f"grid status: no Prefect server answers at {DEAD_API}")


@pytest.mark.parametrize(
    "change, field",
    [
        ({"run": {"models": ["nope"]}}, "run.models='nope'"),
        ({"hparam": {"g": [{"a": 1, "b": 2}, {"a": 1, "c": 2}]}}, "hparam.g="),
        ({"models": {"m": {"command": "train <missing>"}}}, "models.m.command='<missing>'"),
        ({"resources": {"memory": "16GB"}}, "resources.memory='16GB'"),
        ({"models": {"m": {"command": "x <lr>", "hparam": {"lr": [1, 1]}}}}, "cells="),
    ],
)
def test_bad_spec_fails_before_anything_with_one_line(tmp_path, change, field):
    (tmp_path / "grid.yaml").write_text(yaml.safe_dump(spec(**change)))
    for command in ("submit", "plan"):
        proc = _cli("grid", command, "grid.yaml", cwd=tmp_path)
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr.count("\n") == 1 and field in proc.stderr, proc.stderr
        assert proc.stdout == ""


def test_plan_imports_neither_prefect_nor_torch():
    code = (
        "import sys; from plantcad_flows.cli import main; main(['grid', 'plan', 'configs/grid-example.yaml']);"
        "print(sorted(m for m in ('prefect', 'torch', 'ray') if m in sys.modules))"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        env=dict(env, PREFECT_API_URL=DEAD_API),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[-1] == "[]"


def test_eval_cells_become_zero_shot_eval_runs_with_their_own_gpus(tmp_path):
    from flows.grid import cell_parameters
    from plantcad_flows.config import EvalConfig

    (tmp_path / "bench.yaml").write_text(
        yaml.safe_dump(
            {
                "models": [{"name": "<model>", "path": "<ckpt>", "type": "mlm"}],
                "splits": [{"task": "tis_recovery", "split": "test_maize"}],
                "compute": {"device": "cuda", "batch_size": "auto"},
            }
        )
    )
    (tmp_path / "grid.yaml").write_text(
        yaml.safe_dump(
            {
                "project": "ckpts",
                "prefix": "s3://bucket/evals",
                "target": "kubernetes",
                "models": {
                    "step-1000": {"hparam": {"_ckpt": "/data/ckpt/1000"}, "gpu_count": 1},
                    "step-2000": {"hparam": {"_ckpt": "/data/ckpt/2000"}, "gpu_count": 4},
                },
                "datasets": {"benchmark": {"eval": "bench.yaml"}},
            }
        )
    )
    from plantcad_flows.grid.expand import plan_grid

    cells = plan_grid(tmp_path / "grid.yaml", check_eval=lambda c: EvalConfig.model_validate(c) and c)
    assert [c.deployment for c in cells] == ["zero-shot-eval/kubernetes"] * 2
    assert [c.job_variables["gpu_count"] for c in cells] == [1, 4]
    for cell, step in zip(cells, ("1000", "2000")):
        params = cell_parameters(cell, ["WANDB_API_KEY"])
        assert set(params) == {"config"}  # the zero-shot-eval flow's one parameter
        config = EvalConfig.model_validate(params["config"])
        assert config.models[0].path == f"/data/ckpt/{step}" and config.models[0].name == f"step-{step}"
        assert config.executor.prefix == cell.output_uri == f"s3://bucket/evals/grids/ckpts/{cell.name}"


def test_pickup_keeps_an_eval_tables_dataset_as_data_source(tmp_path):
    """An eval cell's table says where each split's data came from in `dataset`: that is not the
    grid's dataset, and it keeps a name of its own rather than `dataset.result`."""
    [cell] = cells_of(spec(models={"m": {"command": "x"}}, datasets={"synthetic": {}}))
    cell = cell.model_copy(update={"kind": "eval", "command": None, "eval_config": {}})
    latest = tmp_path / cell.name / "latest" / "abc"
    latest.mkdir(parents=True)
    pd.DataFrame(
        {
            "model": ["m"],
            "dataset": ["/data/tis/test_maize.parquet"],
            "task": ["tis_recovery"],
            "value": [0.6],
        }
    ).to_parquet(latest / "results.parquet")
    table, missing = combine([cell], tmp_path)
    assert missing == []
    assert table["dataset"].tolist() == ["synthetic"] and "dataset.result" not in table.columns
    assert table["data_source"].tolist() == ["/data/tis/test_maize.parquet"]
    assert "model.result" not in table.columns  # the same model: dropped
