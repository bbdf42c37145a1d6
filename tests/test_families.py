"""Task families as plugins and benchmarks as data: the shipped task file, users' task files, the
checks a family makes, and the promise that moving the tasks into YAML moved no cache key."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from servers import run_cli

from plantcad_flows.config import (
    ComputeConfig,
    EvalConfig,
    ModelConfig,
    SamplingConfig,
    SplitConfig,
    load_config,
)
from plantcad_flows.errors import ValidationError
from plantcad_flows.families import FAMILIES, builtin_tasks, read_task_file, task_registry
from plantcad_flows.identity.records import Identity
from plantcad_flows.layout import hashing
from plantcad_flows.layout.hashing import cell_fields, short_hash, split_fields

REPO = Path(__file__).resolve().parents[1]
FIXTURE = Path(__file__).parent / "data" / "keys_before_task_files.json"

LETTUCE = {
    "name": "lettuce_tis_recovery",
    "family": "motif_recovery",
    "splits": ["test"],
    "mask_positions": [4094, 4095, 4096],
    "motif_len": 3,
}


def write_tasks(path: Path, tasks: list[dict]) -> Path:
    path.write_text(yaml.safe_dump(tasks, sort_keys=False))
    return path


# --- the shipped task set ---------------------------------------------------------------------


def test_shipped_task_file_holds_the_benchmark():
    tasks = builtin_tasks()
    assert len(tasks) == 12
    assert {t.family for t in tasks.values()} == set(FAMILIES) - {"variant_effect"}  # from variants:
    assert all(t.dataset.repo == "plantcad/PlantCAD2_zero_shot_tasks" for t in tasks.values())
    assert all(t.dataset_config == t.name and t.shipped for t in tasks.values())
    assert tasks["tis_recovery"].settings == {"mask_positions": [4094, 4095, 4096]}
    sv = tasks["structural_variant_effect_prediction"]
    assert sv.family_object.settings_of(sv).flanking == 5 and sv.column("ref") == "RefSeq"


def test_moving_tasks_to_yaml_moved_no_key_and_the_definitions_moved_them_once(monkeypatch):
    """Every split and cell key of every built-in task split, in 4 split settings x 2 samplings
    x 2 models x 2 precisions (784 keys), less the task definition's own fields, equals the key
    the code with the tasks in Python computed (the fixture was written by that code, commit
    822b9bc): moving the tasks into YAML moved no key, and the one move since (code version
    2026.12.1) is the definition entering every key, shipped or not."""
    fixture = json.loads(FIXTURE.read_text())
    monkeypatch.setattr(hashing, "CODE_VERSION", fixture["code_version"])
    models = [
        ModelConfig(path="org/mlm", type="mlm", context_length=512),
        ModelConfig(path="org/clm", type="clm", context_length=8192, motif_inference_mode="fwd_rc_avg"),
    ]
    mid, did = Identity(kind="hub", revision="a" * 40), Identity(kind="local", fingerprint="b" * 64)
    variants = [
        {},
        {"seq_length": 4096},
        {"path": "data/x.parquet", "seq_column": "seq", "label_column": "y"},
        {"repo_id": "someone/fork", "revision": "v2"},
    ]
    now = {}
    for task in builtin_tasks().values():
        for split in task.splits:
            for i, extra in enumerate(variants):
                s = SplitConfig(task=task.name, split=split, **extra)
                for sampling in (SamplingConfig(), SamplingConfig(max_size=64, seed=3)):
                    fields = split_fields(s, sampling, did)
                    assert fields.pop("definition") == task.identity_fields()
                    now[f"split/{task.name}/{split}/v{i}/{sampling.max_size}"] = short_hash(fields)
                    for m in models:
                        if s.family.unsupported_reason(m.type):
                            continue
                        for compute in (ComputeConfig(), ComputeConfig(device="cuda", precision="bf16")):
                            key = f"cell/{m.path}/{task.name}/{split}/v{i}/{sampling.max_size}/{compute.precision}"
                            fields = cell_fields(m, s, sampling, compute, mid, did)
                            fields["data"].pop("definition")
                            now[key] = short_hash(fields)
    assert len(now) == len(fixture["keys"]) == 784
    assert now == fixture["keys"]


def _all_cell_keys() -> dict[str, str]:
    """The fwd cell key of every built-in task split, for one MLM (at 512 bp: every task scores)."""
    model = ModelConfig(path="org/mlm", type="mlm", context_length=512)
    mid, did = Identity(kind="hub", revision="a" * 40), Identity(kind="local", fingerprint="b" * 64)
    out = {}
    for task in builtin_tasks().values():
        for split in task.splits:
            s = SplitConfig(task=task.name, split=split)
            out[s.key] = short_hash(cell_fields(model, s, SamplingConfig(), ComputeConfig(), mid, did))
    return out


@pytest.mark.parametrize(
    "edit",
    [
        lambda t: t.update(mask_positions=[4095, 4096, 4097]),  # what is masked
        lambda t: t.update(version=2),  # the same fields, new meaning: bump it
        lambda t: t.update(dataset={"config": "tis_recovery_v2"}),  # another dataset config
    ],
)
def test_editing_a_shipped_task_rescores_its_cells_and_nothing_else(tmp_path, monkeypatch, edit):
    from plantcad_flows.families import registry
    from plantcad_flows.families import tasks as tasks_module

    before = _all_cell_keys()
    data = yaml.safe_load(registry.BUILTIN_TASK_FILE.read_text())
    [tis] = [t for t in data["tasks"] if t["name"] == "tis_recovery"]
    edit(tis)
    edited = tmp_path / "plantcad2.yaml"
    edited.write_text(yaml.safe_dump(data, sort_keys=False))
    monkeypatch.setattr(registry, "BUILTIN_TASK_FILE", edited)
    monkeypatch.setattr(tasks_module, "_BUILTIN", None)
    after = _all_cell_keys()
    moved = sorted(k for k in before if before[k] != after[k])
    assert moved == ["tis_recovery/test_maize", "tis_recovery/test_tomato"]


def test_task_file_defaults_are_merged_under_each_task(tmp_path):
    """`defaults:` are merged key by key under each task; the task's own value wins; spelling a
    default out (or leaving it to the defaults) gives the same definition and the same key."""
    spelled = dict(LETTUCE, dataset={"repo": "me/lettuce", "config": "lettuce_tis_recovery"}, seq_length=8192)
    plain = write_tasks(tmp_path / "plain.yaml", [spelled])
    with_defaults = tmp_path / "defaults.yaml"
    with_defaults.write_text(
        yaml.safe_dump(
            {
                "defaults": {"dataset": {"repo": "me/lettuce"}, "seq_length": 4096},
                "tasks": [{k: v for k, v in LETTUCE.items() if k != "motif_len"} | {"seq_length": 8192}],
            }
        )
    )
    [a], [b] = read_task_file(plain), read_task_file(with_defaults)
    assert b.dataset.repo == "me/lettuce" and b.seq_length == 8192  # the task's own value wins
    assert a.identity_fields() == b.identity_fields()
    bumped = b.model_copy(update={"version": 2})
    assert bumped.identity_fields() != b.identity_fields()


def test_no_family_branches_outside_families():
    """The pipeline asks the family; nothing outside families/ compares against one, nor asks
    whether a split is a variant set (`split.variants is not None`: the family's steps decide)."""
    pattern = re.compile(r"\bFamily\.|family\s*[!=]=|\.family\s+(not\s+)?in\s|variants\s+is\s+(not\s+)?None")
    offenders = []
    for root in ("plantcad_flows", "tasks", "flows", "deployments"):
        for path in (REPO / root).rglob("*.py"):
            if "families" in path.parts:
                continue
            for n, line in enumerate(path.read_text().splitlines(), 1):
                if pattern.search(line):
                    offenders.append(f"{path.relative_to(REPO)}:{n}: {line.strip()}")
    assert offenders == []


# --- users' task files ------------------------------------------------------------------------


def test_user_task_is_used_like_a_builtin(tmp_path):
    f = write_tasks(tmp_path / "lettuce.yaml", [LETTUCE])
    cfg = EvalConfig.model_validate(
        {
            "task_files": [str(f)],
            "models": [{"path": "org/m", "context_length": 512}],
            "splits": [{"task": "lettuce_tis_recovery", "split": "test", "path": "x.parquet"}],
        }
    )
    split = cfg.splits[0]
    assert split.family.name == "motif_recovery" and split.mask_positions == (4094, 4095, 4096)
    assert split.definition.source == str(f) and not split.definition.shipped
    # the config carries its definitions: a worker elsewhere needs no task file
    again = EvalConfig.model_validate_json(cfg.model_dump_json())
    assert again.splits[0].definition == split.definition


def test_user_definition_enters_the_key(tmp_path):
    def key(task: dict) -> str:
        f = write_tasks(tmp_path / f"{task['family']}.yaml", [task])
        cfg = EvalConfig.model_validate(
            {
                "task_files": [str(f)],
                "models": [{"path": "org/m"}],
                "splits": [{"task": task["name"], "split": "test", "path": "x.parquet"}],
            }
        )
        return short_hash(
            split_fields(cfg.splits[0], SamplingConfig(), Identity(kind="local", fingerprint="f"))
        )

    motif = key(LETTUCE)
    as_conservation = key({**LETTUCE, "family": "evolutionary_conservation"})
    assert motif != as_conservation
    # a shipped task copied into a user's file under its own name is the shipped task
    shipped = builtin_tasks()["tis_recovery"].model_dump(exclude={"source"})
    assert read_task_file(write_tasks(tmp_path / "copy.yaml", [shipped]))[0].shipped


@pytest.mark.parametrize(
    "task,needles",
    [
        ({**LETTUCE, "motif_length": 3}, ["tasks[lettuce_tis_recovery].motif_length", "unknown key"]),
        (
            {**LETTUCE, "family": "motif_recovry"},
            ["tasks[lettuce_tis_recovery].family='motif_recovry'", "did you mean 'motif_recovery'?"],
        ),
        (
            {**LETTUCE, "motif_len": 2},
            ["tasks[lettuce_tis_recovery].motif_len=2", "does not match the 3 masked"],
        ),
        (
            {
                "name": "big_sv",
                "family": "structural_variant_effect",
                "splits": ["test"],
                "seq_length": 64,
                "flanking": 40,
            },
            ["tasks[big_sv].flanking=40", "exceeds the 64-bp sequences"],
        ),
        (
            {**LETTUCE, "mask_positions": [10, 11, 12]},
            ["tasks[lettuce_tis_recovery].mask_positions", "not centred"],
        ),
        (
            {**LETTUCE, "flanking": 5},
            ["tasks[lettuce_tis_recovery].flanking=5", "does nothing for family motif_recovery"],
        ),
    ],
    ids=["unknown-key", "unknown-family", "motif-len", "flanking", "masks", "no-op-setting"],
)
def test_bad_task_file_is_one_line_naming_file_task_field(tmp_path, task, needles):
    f = write_tasks(tmp_path / "mine.yaml", [task])
    with pytest.raises(ValidationError) as e:
        read_task_file(f)
    assert str(f) in str(e.value)
    for n in needles:
        assert n in str(e.value), str(e.value)
    # the CLI: exit 2, one line, before anything runs
    proc = run_cli("tasks", "--task-file", f, cwd=tmp_path)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert all(n in proc.stderr for n in needles), proc.stderr


def test_contradictory_split_overrides_exit_2(tmp_path):
    cfg = {
        "models": [{"path": "org/m"}],
        "splits": [
            {
                "task": "tis_recovery",
                "split": "test_maize",
                "overrides": {"mask_token_indexes": [4095], "motif_len": 3},
            }
        ],
    }
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    proc = run_cli("eval", path, "--dry-run", cwd=tmp_path)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "overrides.motif_len=3" in lines[0] and "does not match" in lines[0], lines


def test_clash_with_builtin_names_both_files(tmp_path):
    f = write_tasks(tmp_path / "mine.yaml", [{**LETTUCE, "name": "tis_recovery"}])
    with pytest.raises(ValidationError) as e:
        task_registry([str(f)])
    assert str(f) in str(e.value) and "plantcad2.yaml" in str(e.value) and "clashes" in str(e.value)


def test_tasks_command_lists_user_tasks_with_their_file(tmp_path):
    f = write_tasks(tmp_path / "lettuce.yaml", [LETTUCE])
    proc = run_cli("tasks", "--task-file", f, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    rows = {line.split()[0]: line for line in proc.stdout.splitlines()}
    assert str(f) in rows["lettuce_tis_recovery"] and "motif_recovery" in rows["lettuce_tis_recovery"]
    assert "plantcad2.yaml" in rows["tis_recovery"]
    assert proc.stdout.strip().splitlines()[-1].startswith("13 tasks")


def test_relative_task_files_are_found_beside_the_config(tmp_path):
    (tmp_path / "conf").mkdir()
    write_tasks(tmp_path / "conf" / "lettuce.yaml", [LETTUCE])
    path = tmp_path / "conf" / "eval.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "task_files": ["lettuce.yaml"],
                "models": [{"path": "org/m"}],
                "splits": [{"task": "lettuce_tis_recovery", "split": "test", "path": "x.parquet"}],
            }
        )
    )
    cfg = load_config(path)
    assert cfg.task_files == [str(tmp_path / "conf" / "lettuce.yaml")]


@pytest.mark.slow
def test_lettuce_motif_task_runs_through_eval_like_tis_recovery(prefect_server, tmp_path, synthetic_dir):
    """A user's motif task on their own parquet, defined only in YAML, runs through `eval` and
    scores exactly as the built-in tis_recovery does on the same data."""
    from plantcad_flows.benchmark.synthetic import ASSETS_MODELS

    data = synthetic_dir / "tis_recovery" / "test_maize.parquet"
    f = write_tasks(tmp_path / "lettuce.yaml", [LETTUCE])
    cfg = {
        "task_files": [str(f)],
        "models": [{"name": "tiny-mlm", "path": str(ASSETS_MODELS / "tiny-mlm"), "context_length": 512}],
        "splits": [
            {"task": "tis_recovery", "split": "test_maize", "path": str(data)},
            {"task": "lettuce_tis_recovery", "split": "test", "path": str(data)},
        ],
        "compute": {"device": "cpu", "batch_size": 8},
        "executor": {"prefix": str(tmp_path / "evals")},
        "ray": {"enabled": False},
    }
    path = tmp_path / "eval.yaml"
    path.write_text(yaml.safe_dump(cfg))
    out = tmp_path / "results.json"
    proc = run_cli("eval", path, "--results-json", out, cwd=tmp_path, api_url=prefect_server, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = {r["task"]: r for r in json.loads(out.read_text())}
    assert rows.keys() == {"tis_recovery", "lettuce_tis_recovery"}
    assert rows["lettuce_tis_recovery"]["num_examples"] == rows["tis_recovery"]["num_examples"] > 0
    for metric in ("motif_accuracy", "token_accuracy"):
        assert rows["lettuce_tis_recovery"][metric] == rows["tis_recovery"][metric], metric
    assert rows["tis_recovery"]["motif_accuracy"] > 0.25  # the tiny MLM recovers TIS motifs
