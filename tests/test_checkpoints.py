"""Checkpoint discovery: local run directories, `s3://` (a real moto server on loopback), a hub
repo's subfolders and its branches or tags (faked at the `huggingface_hub` boundary only).

Complete checkpoints become models `{name}@step-{N}`; half-written ones are skipped and reported;
`every` / `last` thin the list; the dry run says which checkpoints are new before anything loads.
The checkpoints are the tiny MLM's sweep fixture (`benchmark/checkpoints.py`).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import TEST_EXAMPLES
from hub_fake import FakeHub, git_refs, repo_files
from test_s3_storage import BUCKET, s3, s3_endpoint  # noqa: F401  (the moto server's fixtures)

from plantcad_flows.benchmark.checkpoints import (
    blend_at,
    blended_weights,
    write_checkpoint,
    write_partial_checkpoint,
    write_sweep,
)
from plantcad_flows.config import CheckpointsConfig, EvalConfig
from plantcad_flows.errors import ValidationError
from plantcad_flows.identity.checkpoints import checkpoint_problem, discover, parse_step
from plantcad_flows.identity.resolve import resolve
from plantcad_flows.layout.plan import CellStatus, build_cells, format_plan, plan_cells

CLI = Path(sys.executable).parent / "plantcad-flows"
REPO = Path(__file__).resolve().parents[1]
SPLIT = ("tis_recovery", "test_maize")


def _entry(path, **kw) -> CheckpointsConfig:
    return CheckpointsConfig.model_validate({"path": str(path), "context_length": 512, **kw})


def _config(synthetic_dir: Path, prefix: Path, *entries: dict, models=()) -> dict:
    task, split = SPLIT
    return {
        "models": list(models),
        "checkpoints": list(entries),
        "splits": [{"task": task, "split": split, "path": str(synthetic_dir / task / f"{split}.parquet")}],
        "compute": {"device": "cpu", "batch_size": 8},
        "executor": {"prefix": str(prefix)},
    }


# ------------------------------------------------------------------ the fixture checkpoints


def test_sweep_fixture_is_deterministic_and_ends_at_the_shipped_model(tmp_path):
    from safetensors.numpy import load_file

    from plantcad_flows.benchmark.checkpoints import TINY_MLM, WEIGHTS

    a = write_sweep(tmp_path / "a", steps=(1000, 4000))
    b = write_sweep(tmp_path / "b", steps=(1000, 4000))
    assert [p.name for p in a] == ["step-1000", "step-4000"]
    for x, y in zip(a, b):
        assert (x / WEIGHTS).read_bytes() == (y / WEIGHTS).read_bytes()
    shipped, final = load_file(str(TINY_MLM / WEIGHTS)), load_file(str(a[1] / WEIGHTS))
    assert all((shipped[k] == final[k]).all() for k in shipped)
    assert (a[0] / WEIGHTS).read_bytes() != (a[1] / WEIGHTS).read_bytes()
    assert [blend_at(s) for s in (0, 2000, 4000, 8000)] == [0.8, 0.9, 1.0, 1.0]
    init = blended_weights(0.0)
    assert (init["model.final_norm.weight"] == 1).all() and (init["decoder.bias"] == 0).all()
    assert {p.name for p in (a[0]).iterdir()} == {p.name for p in TINY_MLM.iterdir()}


# ------------------------------------------------------------------ completeness and names


def test_completeness_rules():
    cfg, w = {"config.json": 10}, {"model.safetensors": 100}
    assert checkpoint_problem({**cfg, **w}) is None
    assert checkpoint_problem({**cfg, "pytorch_model-00001-of-00002.bin": 5}) is None
    assert "no config.json" in checkpoint_problem(w)
    assert "no weights" in checkpoint_problem({**cfg, "model.safetensors.tmp": 100, "optimizer.pt": 9})
    index = {"weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}
    files = {**cfg, "model.safetensors.index.json": 1, "model-00001-of-00002.safetensors": 100}
    problem = checkpoint_problem(files, read=lambda name: json.dumps(index).encode())
    assert "model-00002-of-00002.safetensors" in problem
    assert [parse_step(n) for n in ("step-1000", "checkpoint-500", "global_step20", "final")] == [
        1000,
        500,
        20,
        None,
    ]


def test_local_run_directory(tmp_path):
    run = tmp_path / "run-7" / "hf"
    write_sweep(run, steps=(1000, 3000, 2000))
    write_partial_checkpoint(run, 4000)  # an upload cut off half way through the weights
    (run / "step-5000").mkdir()  # created, nothing in it yet
    (run / "step-5000" / "config.json").write_text("{}")
    (run / "logs").mkdir()  # not matched by the pattern
    (run / "step-final").mkdir()

    d = discover(_entry(run, name="run-7"))
    assert [c.model.label for c in d.found] == ["run-7@step-1000", "run-7@step-2000", "run-7@step-3000"]
    assert [c.model.step for c in d.found] == [1000, 2000, 3000]
    assert d.found[0].model.path == str(run / "step-1000") and d.found[0].identity.kind == "local"
    assert len({c.identity.fingerprint for c in d.found}) == 3
    skipped = {c.name: c.problem for c in d.skipped}
    assert set(skipped) == {"step-4000", "step-5000", "step-final"}
    assert "model.safetensors is truncated" in skipped["step-4000"]
    assert "no weights" in skipped["step-5000"]
    assert "no step number" in skipped["step-final"]
    assert discover(_entry(run)).found[0].model.label == "hf@step-1000"  # default name: the last part


def test_every_and_last_thin_the_list(tmp_path):
    run = tmp_path / "run"
    write_sweep(run, steps=(1000, 2000, 3000, 4000, 5000, 6000), final_step=6000)
    steps = lambda **kw: [c.step for c in discover(_entry(run, **kw)).found]  # noqa: E731
    assert steps(every=2000) == [2000, 4000, 6000]
    assert steps(last=2) == [5000, 6000]
    assert steps(every=2000, last=2) == [4000, 6000]
    write_partial_checkpoint(run, 7000)
    d = discover(_entry(run, last=2))
    assert [c.step for c in d.found] == [5000, 6000]  # the last two *complete* ones
    assert [c.name for c in d.skipped] == ["step-7000"] and d.thinned == 4


def test_names_must_not_collide_and_sources_must_exist(tmp_path, small_models):
    run = tmp_path / "run"
    write_sweep(run, steps=(1000,))
    cfg = {
        "models": [{"path": str(small_models["mlm"]), "name": "run@step-1000", "context_length": 512}],
        "checkpoints": [{"path": str(run), "context_length": 512}],
        "splits": [{"task": "tis_recovery", "split": "test_maize", "path": str(run)}],
    }
    with pytest.raises(ValidationError, match=r"checkpoints\[run\]\.name"):
        resolve(EvalConfig.model_validate(cfg))
    with pytest.raises(ValidationError, match=r"checkpoints\[gone\]\.path=.*no such directory"):
        discover(_entry(tmp_path / "gone"))
    with pytest.raises(ValidationError, match=r"checkpoints\[run\]\.match='branches'"):
        discover(_entry(run, match="branches"))
    with pytest.raises(ValueError, match="models"):
        EvalConfig.model_validate({"splits": cfg["splits"]})  # neither models nor checkpoints


def _score(cell) -> None:
    """Score one cell through the pipeline's own step functions (no Prefect): prepare, one
    shard, metrics. Afterwards the plan finds it complete."""
    from plantcad_flows.layout.sharding import plan_shards
    from plantcad_flows.steps import finalize_cell, prepare, score_shard

    prepared = prepare(cell.split_job)
    shards = [score_shard(cell, s, prepared) for s in plan_shards(prepared.num_examples, 1)]
    finalize_cell(cell, shards, prepared)


def test_dry_run_lists_checkpoints_new_scored_and_skipped(tmp_path, synthetic_dir):
    run = tmp_path / "run-7"
    write_sweep(run, steps=(1000, 2000))
    prefix = tmp_path / "out"
    cfg_path = tmp_path / "sweep.yaml"
    cfg_path.write_text(
        yaml.safe_dump(_config(synthetic_dir, prefix, {"path": str(run), "context_length": 512}))
    )
    cfg = EvalConfig.model_validate(yaml.safe_load(cfg_path.read_text()))
    _score(next(c for c in build_cells(cfg) if c.model.step == 1000))
    write_checkpoint(run, 3000)  # arrives after the first evaluation
    write_partial_checkpoint(run, 4000)

    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(HF_HUB_OFFLINE="1", PYTHONPATH=str(REPO), PREFECT_API_URL="http://127.0.0.1:9/api")
    probe = (
        "import sys\nfrom plantcad_flows.cli import main\n"
        f"rc = main(['eval', {str(cfg_path)!r}, '--dry-run'])\n"
        "heavy = sorted(m for m in ('torch', 'transformers', 'prefect', 'ray') if m in sys.modules)\n"
        "print('RC', rc, 'HEAVY', heavy)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert "RC 0 HEAVY []" in out.stdout, out.stdout + out.stderr
    lines = out.stdout.splitlines()
    table_end = next(i for i, line in enumerate(lines) if line.startswith("1 cached, 2 to run"))
    cells = {line.split()[0]: line for line in lines[1:table_end]}
    assert set(cells) == {f"run-7@step-{s}/tis_recovery/test_maize" for s in (1000, 2000, 3000)}
    assert cells["run-7@step-1000/tis_recovery/test_maize"].split()[1] == "cached"
    section = lines[table_end + 1 :]
    assert section[0] == f"checkpoints run-7 ({run}): 3 found, 2 new, 1 skipped"
    assert section[1].split() == ["run-7@step-1000", "scored"]
    assert section[2].split() == ["run-7@step-2000", "new"]
    assert section[3].split() == ["run-7@step-3000", "new"]
    assert section[4].split()[:3] == ["step-4000", "skipped:", "incomplete:"]
    assert "RC 0" in lines[-1] and len(section) == 6


def test_plan_of_discovered_checkpoints_runs_only_the_new(tmp_path, synthetic_dir):
    run = tmp_path / "run"
    write_sweep(run, steps=(1000,))
    cfg = EvalConfig.model_validate(
        _config(synthetic_dir, tmp_path / "out", {"path": str(run), "context_length": 512})
    )
    _score(build_cells(cfg)[0])
    write_checkpoint(run, 2000)
    resolution = resolve(cfg)
    planned = plan_cells(cfg, resolution)
    assert {p.cell.model.label: p.status for p in planned} == {
        "run@step-1000": CellStatus.CACHED,
        "run@step-2000": CellStatus.TO_RUN,
    }
    text = format_plan(planned, resolution.discoveries)
    assert "1 found" not in text and "2 found, 1 new, 0 skipped" in text
    assert planned[0].cell.model_identity.kind == "local" and planned[0].cell.model.step == 1000
    # the cached cell keeps its key when a newer checkpoint arrives: it is not scored again
    assert planned[0].cell.key == build_cells(cfg, resolution)[0].key


# ------------------------------------------------------------------ hub: subfolders, branches, tags


def test_hub_subfolders(monkeypatch):
    hub = FakeHub().install(monkeypatch)
    sha1, sha2 = "1" * 40, "2" * 40
    hub.set("org/run", None, sha1)
    hub.trees[("org/run", sha1)] = (
        repo_files("")
        + repo_files("step-100", blob="x")
        + repo_files("step-200", weights=False)
        + repo_files("step-300", blob="y")
    )
    d = discover(_entry("org/run", name="run"))
    assert [(c.model.label, c.model.subfolder, c.model.revision) for c in d.found] == [
        ("run@step-100", "step-100", sha1),
        ("run@step-300", "step-300", sha1),
    ]
    assert [(c.name, c.problem) for c in d.skipped] == [
        ("step-200", "incomplete: no weights (*.safetensors or pytorch_model*.bin)")
    ]
    # a new commit re-uploads step-300 only: step-100 keeps its identity (not scored again)
    hub.set("org/run", None, sha2)
    hub.trees[("org/run", sha2)] = repo_files("step-100", blob="x") + repo_files("step-300", blob="z")
    again = {c.name: c.identity for c in discover(_entry("org/run", name="run")).found}
    assert again["step-100"].key == d.found[0].identity.key and again["step-100"].revision == sha2
    assert again["step-300"].key != d.found[1].identity.key
    with pytest.raises(ValidationError, match=r"checkpoints\[run\]\.revision='nope'"):
        discover(_entry("org/run", name="run", revision="nope"))


@pytest.mark.parametrize("match", ["branches", "tags"])
def test_hub_branches_or_tags(monkeypatch, match):
    hub = FakeHub().install(monkeypatch)
    shas = {"step-10": "a" * 40, "step-20": "b" * 40, "step-30": "c" * 40}
    refs = {**shas, "main": "d" * 40}
    hub.refs["org/run"] = git_refs(**{match: refs})
    for name, sha in refs.items():
        hub.trees[("org/run", sha)] = repo_files("", weights=name != "step-30")
    d = discover(_entry("org/run", name="r", match=match, last=5))
    assert [(c.model.label, c.model.revision, c.model.subfolder) for c in d.found] == [
        ("r@step-10", shas["step-10"], ""),
        ("r@step-20", shas["step-20"], ""),
    ]
    assert [c.name for c in d.skipped] == ["step-30"] and d.found[1].identity.requested == "step-20"
    assert "main" not in {c.name for c in d.found + d.skipped}
    with pytest.raises(ValidationError, match=r"checkpoints\[r\]\.path='org/none'.*not found"):
        discover(_entry("org/none", name="r", match=match))


# ------------------------------------------------------------------ s3, on a moto server


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    """Node caches (copies of remote checkpoints) under tmp_path."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def _upload(client, bucket: str, local: Path, key_prefix: str) -> None:
    for f in sorted(local.iterdir()):
        client.put_object(Bucket=bucket, Key=f"{key_prefix}/{f.name}", Body=f.read_bytes())


@pytest.mark.slow
def test_s3_checkpoints_and_data(s3, tmp_path, synthetic_dir, home):  # noqa: F811 (fixture)
    from plantcad_flows.config import ComputeConfig
    from plantcad_flows.scoring.loading import load_model

    local = tmp_path / "local"
    write_sweep(local, steps=(1000, 2000))
    root = f"run-7-{tmp_path.name}/hf"
    for step in (1000, 2000):
        _upload(s3, BUCKET, local / f"step-{step}", f"{root}/step-{step}")
    s3.put_object(Bucket=BUCKET, Key=f"{root}/step-3000/config.json", Body=b"{}")  # upload under way
    task, split = SPLIT
    data = (synthetic_dir / task / f"{split}.parquet").read_bytes()
    s3.put_object(Bucket=BUCKET, Key=f"{root}-data/{split}.parquet", Body=data)
    cfg = {
        "checkpoints": [{"path": f"s3://{BUCKET}/{root}", "name": "run-7", "context_length": 512}],
        "splits": [{"task": task, "split": split, "path": f"s3://{BUCKET}/{root}-data/{split}.parquet"}],
        "compute": {"device": "cpu"},
        "executor": {"prefix": str(tmp_path / "out")},
    }
    config = EvalConfig.model_validate(cfg)
    resolution = resolve(config)
    (d,) = resolution.discoveries
    assert [c.model.label for c in d.found] == ["run-7@step-1000", "run-7@step-2000"]
    assert d.found[0].model.path == f"s3://{BUCKET}/{root}/step-1000"
    assert [(c.name, c.problem) for c in d.skipped] == [
        ("step-3000", "incomplete: no weights (*.safetensors or pytorch_model*.bin)")
    ]
    assert {m.identity.kind for m in resolution.models} == {"remote"}
    cells = build_cells(config, resolution)
    assert cells[0].data_identity.kind == "remote"

    # a discovered s3 checkpoint loads (a node-local copy of its files)
    loaded = load_model(cells[0].model, ComputeConfig())
    assert loaded.type == "mlm" and loaded.mask_id is not None

    # same bytes uploaded again: same ETags, same keys; new weights or new data: new keys
    _upload(s3, BUCKET, local / "step-1000", f"{root}/step-1000")
    s3.put_object(Bucket=BUCKET, Key=f"{root}-data/{split}.parquet", Body=data)
    same = build_cells(config)
    assert [c.key for c in same] == [c.key for c in cells]
    write_checkpoint(local, 1000, final_step=1500)  # step-1000 retrained into the same place
    _upload(s3, BUCKET, local / "step-1000", f"{root}/step-1000")
    moved = build_cells(config)
    assert moved[0].key != cells[0].key and moved[1].key == cells[1].key
    import pandas as pd

    frame = pd.read_parquet(synthetic_dir / task / f"{split}.parquet").iloc[: TEST_EXAMPLES // 2]
    s3.put_object(Bucket=BUCKET, Key=f"{root}-data/{split}.parquet", Body=frame.to_parquet(index=False))
    replaced = build_cells(config)
    assert all(a.split_job.key != b.split_job.key for a, b in zip(replaced, moved))
