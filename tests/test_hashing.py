"""Which config fields move a cell's cache key and which must not (marin's `test_versioning`).

A key that moves when it should not throws away finished GPU work (bigger batch, more workers,
another GPU index, another output prefix); a key that does not move when it should serves stale
scores. Every field is checked one at a time against the same baseline, through the real
`EvalConfig -> build_cells -> Cell.key` path that the flow and the dry run use.

Hub ids are resolved to commits at plan time; here the hub is faked at the `huggingface_hub`
boundary (`hub_fake.FakeHub`, each (repo, revision) pointing at its own commit), so a revision
moves the key exactly when the commit it names does.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hub_fake import FakeHub

import plantcad_flows.layout.hashing as hashing
from plantcad_flows.config import EvalConfig
from plantcad_flows.layout.plan import Cell, build_cells

REPO = Path(__file__).resolve().parents[1]

BASE = {
    "models": [
        {
            "path": "org/plantcad-tiny",
            "name": "tiny",
            "type": "clm",
            "context_length": 4096,
            "revision": "abc123",
            "subfolder": "",
            "motif_inference_mode": "fwd_only",
        }
    ],
    "splits": [{"task": "conservation_within_andropogoneae", "split": "test"}],
    "compute": {"device": "cuda:0", "batch_size": 8, "num_workers": 2, "precision": "bf16"},
    "sampling": {"rate": 0.5, "max_size": 100, "seed": 0},
    "executor": {"prefix": "/data/evals", "force_run_failed": True},
    "ray": {"enabled": True, "num_shards": 4, "address": None},
}


@pytest.fixture(autouse=True)
def fake_hub(monkeypatch) -> FakeHub:
    return FakeHub(derive=True).install(monkeypatch)


@pytest.fixture(autouse=True)
def split_files(tmp_path, monkeypatch):
    """The parquet files the configs below name (relative paths): a split read from a path
    enters the key by its content, so the file must exist."""
    import pandas as pd

    monkeypatch.chdir(tmp_path)
    for i, name in enumerate(("data/conservation/test.parquet", "x.parquet")):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        pd.DataFrame({"sequence": ["ACGT"], "label": [i]}).to_parquet(tmp_path / name)


def _with(path: str, value, base: dict = BASE) -> dict:
    """A copy of `base` with the dotted `path` (list items by index) set to `value`."""
    cfg = copy.deepcopy(base)
    node = cfg
    *parents, last = path.split(".")
    for p in parents:
        node = node[int(p)] if isinstance(node, list) else node.setdefault(p, {})
    node[last] = value
    return cfg


def _cell(cfg: dict) -> Cell:
    cells = build_cells(EvalConfig.model_validate(cfg))
    assert len(cells) == 1
    return cells[0]


SV = _with("splits", [{"task": "structural_variant_effect_prediction", "split": "test"}])
MOTIF = _with("splits", [{"task": "tis_recovery", "split": "test_maize"}])

MUST_CHANGE = [
    ("models.0.path", "org/plantcad-other", BASE),
    ("models.0.revision", "def456", BASE),
    ("models.0.revision", None, BASE),
    ("models.0.subfolder", "checkpoint-100", BASE),
    ("models.0.type", "mlm", BASE),
    ("models.0.context_length", 8192, BASE),
    ("models.0.motif_inference_mode", "fwd_rc_avg", BASE),
    ("models.0.motif_inference_mode", "rc_only", BASE),
    ("splits.0.task", "conservation_within_poaceae_tis", BASE),
    ("splits.0.split", "test_tomato", MOTIF),
    ("splits.0.path", "data/conservation/test.parquet", BASE),
    ("splits.0.repo_id", "someone/fork_of_zero_shot_tasks", BASE),
    ("splits.0.revision", "v2", BASE),
    ("splits.0.seq_column", "seq", BASE),
    ("splits.0.label_column", "y", BASE),
    ("splits.0.seq_length", 4096, BASE),
    ("splits.0.overrides", {"mask_token_indexes": [4096]}, BASE),
    ("splits.0.overrides", {"motif_len": 5}, MOTIF),
    ("splits.0.overrides", {"flanking": 7}, SV),
    ("sampling.rate", 0.25, BASE),
    ("sampling.rate", None, BASE),
    ("sampling.max_size", 50, BASE),
    ("sampling.seed", 1, BASE),
    ("compute.precision", "fp32", BASE),
    ("compute.device", "cpu", BASE),
]

MUST_NOT_CHANGE = [
    ("compute.batch_size", 64),
    ("compute.batch_size", "auto"),
    ("compute.num_workers", 16),
    ("compute.num_workers", None),
    ("compute.device", "cuda:1"),
    ("compute.device", "cuda"),
    ("ray.num_shards", 1),
    ("ray.address", "ray://head.example:10001"),
    ("ray.enabled", False),
    ("ray.cpus_per_shard", 4.0),
    ("executor.prefix", "s3://bucket/evals"),
    ("executor.force_run_failed", False),
    ("models.0.name", "renamed"),
    ("models.0.trust_remote_code", True),
    ("force", True),
    ("only", "tiny/"),
    # where results are published is not what they are
    (
        "publish",
        {"repo": "plantcad/results", "repo_type": "model", "path_in_repo": "r/{run}", "private": True},
    ),
    ("publish", {"repo": "plantcad/results", "token_secret": "hf-token"}),
]


@pytest.mark.parametrize("path,value,base", MUST_CHANGE, ids=[f"{p}={v!r}" for p, v, _ in MUST_CHANGE])
def test_field_changes_cell_key(path, value, base):
    before, after = _cell(base), _cell(_with(path, value, base))
    assert before.key != after.key
    assert before.dir != after.dir  # the content-addressed directory moves with the key


@pytest.mark.parametrize("path,value", MUST_NOT_CHANGE, ids=[f"{p}={v!r}" for p, v in MUST_NOT_CHANGE])
def test_field_does_not_change_cell_key(path, value):
    assert _cell(_with(path, value)).key == _cell(BASE).key


def test_publish_section_moves_no_plan_hash():
    from plantcad_flows.layout.plan import plan_hash

    published = _with("publish", {"repo": "plantcad/results", "path_in_repo": "results/step-{step}"})
    assert plan_hash(EvalConfig.model_validate(BASE)) == plan_hash(EvalConfig.model_validate(published))


def test_code_version_changes_every_key(monkeypatch):
    cell = _cell(BASE)
    old_cell, old_split = cell.key, cell.split_job.key
    monkeypatch.setattr(hashing, "CODE_VERSION", "9999.1.1")
    cell = _cell(BASE)
    assert cell.key != old_cell and cell.split_job.key != old_split


def test_explicit_default_masks_are_the_same_cell():
    # what is hashed is the resolved mask positions, not how the YAML spelled them
    explicit = _with("splits.0.overrides", {"mask_token_indexes": [4095]})
    assert _cell(explicit).key == _cell(BASE).key
    motif = _with("splits.0.overrides", {"motif_len": 3}, MOTIF)
    assert _cell(motif).key == _cell(MOTIF).key


def test_split_key_ignores_model_and_compute():
    """One prepared split serves every model: its key sees data and sampling only."""
    base = _cell(BASE).split_job
    for path, value in [
        ("models.0.path", "org/other"),
        ("models.0.type", "mlm"),
        ("models.0.context_length", 8192),
        ("models.0.revision", "zzz"),
        ("compute.precision", "fp32"),
        ("compute.device", "cpu"),
        ("executor.prefix", "/elsewhere"),
    ]:
        assert _cell(_with(path, value)).split_job.key == base.key, path
    for path, value in [
        ("sampling.seed", 3),
        ("sampling.max_size", 7),
        ("splits.0.path", "x.parquet"),
        ("splits.0.seq_column", "s"),
    ]:
        assert _cell(_with(path, value)).split_job.key != base.key, path


def test_two_models_share_one_split_job():
    cfg = _with(
        "models", BASE["models"] + [{"path": "org/b", "name": "b", "type": "mlm", "context_length": 4096}]
    )
    cells = build_cells(EvalConfig.model_validate(cfg))
    assert len(cells) == 2 and cells[0].key != cells[1].key
    assert cells[0].split_job.key == cells[1].split_job.key
    assert cells[0].split_job.dir == cells[1].split_job.dir


def test_hash_is_canonical():
    assert hashing.stable_hash({"a": 1, "b": [1, 2]}) == hashing.stable_hash({"b": [1, 2], "a": 1})
    assert hashing.stable_hash({"a": 1}) != hashing.stable_hash({"a": 1.5})
    assert len(hashing.short_hash({"a": 1})) == 10
    assert hashing.stable_hash({"a": 1}).startswith(hashing.short_hash({"a": 1}))


def test_keys_are_stable_across_processes():
    """Another interpreter (other hash seed, fresh imports) computes the very same keys."""
    script = (
        "import json, sys; from plantcad_flows.layout.plan import build_cells; "
        "from plantcad_flows.config import EvalConfig; "
        "cfg = EvalConfig.model_validate(json.loads(sys.argv[1])); "
        "print(json.dumps([[c.key, c.split_job.key, c.dir] for c in build_cells(cfg)]))"
    )
    cfg = _with("models", BASE["models"] + [{"path": "org/b", "name": "b", "type": "mlm"}])
    cfg["splits"] = [
        {"task": "tis_recovery", "split": "test_maize"},
        {"task": "structural_variant_effect_prediction", "split": "test"},
    ]
    # the other interpreter has no fake hub: pinned commits resolve without it (no network call)
    for i, entry in enumerate(cfg["models"] + cfg["splits"]):
        entry["revision"] = f"{i:x}" * 40
    here = [[c.key, c.split_job.key, c.dir] for c in build_cells(EvalConfig.model_validate(cfg))]
    for seed in ("1", "12345"):
        env = dict(os.environ, PYTHONHASHSEED=seed)
        out = subprocess.run(
            [sys.executable, "-c", script, json.dumps(cfg)],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        assert json.loads(out.stdout) == here
    assert len({k for k, _, _ in here}) == 4


# --- strands and contexts as axes ------------------------------------------------------------

MLM = _with("models.0.type", "mlm", _with("models.0.motif_inference_mode", "fwd_only"))


def test_strand_and_context_axes_make_cells_whose_keys_move_and_fwd_keys_stay():
    """`strands: [fwd, rc]` and `context_length: [a, b]` give one cell each; rc and each context
    have keys of their own, and the forward cell at a listed context keeps the key it had as a
    plain single-context, forward-only config (earlier caches are still served)."""
    plain = _cell(MLM)
    both = build_cells(EvalConfig.model_validate({**MLM, "strands": ["fwd", "rc"]}))
    assert [c.strand for c in both] == ["fwd", "rc"]
    assert both[0].key == plain.key and both[0].dir == plain.dir and both[0].id == plain.id
    assert both[1].key != plain.key and both[1].dir.split("-rc-")[0] == plain.dir.rsplit("-", 1)[0]
    assert both[1].id == plain.id + "/rc" and both[1].fields["strand"] == "rc"
    assert "strand" not in both[0].fields

    two = _with("models.0.context_length", [512, 4096], MLM)
    cells = build_cells(EvalConfig.model_validate(two))
    assert [c.model.context_length for c in cells] == [512, 4096]
    assert cells[1].key == plain.key  # 4096 is BASE's context: the same cell as before
    assert cells[0].key != plain.key and cells[0].id.endswith("/ctx512")
    # a split's own strands win over the config's
    own = _with("splits.0.strands", ["rc"], {**MLM, "strands": ["fwd", "rc"]})
    assert [c.strand for c in build_cells(EvalConfig.model_validate(own))] == ["rc"]


def test_plan_hash_of_a_config_without_the_axes_does_not_move():
    from plantcad_flows.layout.plan import plan_hash

    base = EvalConfig.model_validate(MLM)
    assert plan_hash(base) == plan_hash(EvalConfig.model_validate({**MLM, "strands": ["fwd"]}))
    assert plan_hash(base) != plan_hash(EvalConfig.model_validate({**MLM, "strands": ["fwd", "rc"]}))


def test_rc_cells_of_clm_and_sv_are_unsupported_with_a_reason():
    from plantcad_flows.layout.plan import CellStatus, plan_cells

    clm = plan_cells(EvalConfig.model_validate({**BASE, "strands": ["fwd", "rc"]}))
    assert [p.status for p in clm] == [CellStatus.TO_RUN, CellStatus.UNSUPPORTED]
    assert "motif_inference_mode" in clm[1].reason
    sv = _with("splits", SV["splits"], {**MLM, "strands": ["fwd", "rc"]})
    planned = plan_cells(EvalConfig.model_validate(sv))
    assert [p.status for p in planned] == [CellStatus.TO_RUN, CellStatus.UNSUPPORTED]
    assert "forward strand only" in planned[1].reason


@pytest.mark.parametrize(
    "edit,field",
    [
        ({"strands": ["up"]}, "strands"),
        ({"strands": []}, "strands"),
        ({"strands": ["rc", "rc"]}, "strands"),
        ({"models": [{**MLM["models"][0], "context_length": [512, 513]}]}, "context_length"),
        ({"models": [{**MLM["models"][0], "context_length": [512, 512]}]}, "context_length"),
    ],
)
def test_bad_axes_name_the_field(edit, field):
    import pydantic

    from plantcad_flows.errors import ValidationError

    with pytest.raises((ValidationError, pydantic.ValidationError), match=field):
        EvalConfig.model_validate({**MLM, **edit})


def test_a_task_definition_may_set_its_strands_and_a_split_entry_wins():
    from plantcad_flows.families import builtin_tasks

    definition = builtin_tasks()["conservation_within_andropogoneae"].model_dump() | {
        "strands": ["fwd", "rc"]
    }
    split = {**MLM["splits"][0], "definition": definition}
    cells = build_cells(EvalConfig.model_validate({**MLM, "splits": [split]}))
    assert [c.strand for c in cells] == ["fwd", "rc"]
    own = {**split, "strands": ["fwd"]}
    assert [c.strand for c in build_cells(EvalConfig.model_validate({**MLM, "splits": [own]}))] == ["fwd"]
