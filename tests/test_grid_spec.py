"""Pure tests of the experiment-grid core: spec, expansion, names, resources. No Prefect.

Every expected value is computed by hand from the small specs written out in each test.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest

from plantcad_flows.errors import UnknownNameError, ValidationError
from plantcad_flows.grid.expand import GridCell, expand_grid, pick_command, plan_grid
from plantcad_flows.grid.names import MAX_NAME_LENGTH, cell_hash, cell_name, is_valid_name
from plantcad_flows.grid.resources import (
    KUBERNETES_VARIABLES,
    RESOURCE_FIELDS,
    ResourceLayer,
    kubernetes_job_variables,
    merge_resources,
    process_job_variables,
)
from plantcad_flows.grid.spec import load_grid, parse_grid

REPO = Path(__file__).resolve().parents[1]
TEMPLATE = REPO / "infra" / "kubernetes" / "base-job-template.json"
RFC1123 = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def grid(models=None, datasets=None, **root) -> dict:
    """A minimal valid spec dict; callers override the parts they test."""
    return {
        "project": "demo",
        "prefix": "s3://bucket/runs",
        "models": models or {"m": {"command": "run <model> <dataset>"}},
        "datasets": datasets or {"d": {}},
        **root,
    }


def cells_of(spec: dict, **kwargs):
    return expand_grid(parse_grid(spec), **kwargs)


def hp(cells, *keys):
    return sorted(tuple(c.hparams[k] for k in keys) for c in cells)


# --- expansion -----------------------------------------------------------------------------------


def test_scalar_is_one_value_and_lists_expand_as_a_product():
    spec = grid({"m": {"command": "run <a> <b> <c>", "hparam": {"a": 7, "b": [1, 2], "c": ["x", "y", "z"]}}})
    cells = cells_of(spec)
    assert len(cells) == 1 * 2 * 3
    assert sorted(c.command for c in cells) == sorted(
        f"run 7 {b} {c}" for b in (1, 2) for c in ("x", "y", "z")
    )
    assert all(c.hparams["a"] == 7 for c in cells)


def test_zipped_group_varies_together():
    group = [{"lr": 0.1, "bs": 8}, {"lr": 0.2, "bs": 16}]
    spec = grid({"m": {"command": "run <lr> <bs> <seed>", "hparam": {"opt": group, "seed": [0, 1]}}})
    cells = cells_of(spec)
    assert hp(cells, "lr", "bs", "seed") == [(0.1, 8, 0), (0.1, 8, 1), (0.2, 16, 0), (0.2, 16, 1)]
    assert "opt" not in cells[0].hparams  # the group's key only labels it


def test_model_hparams_win_over_dataset_and_dataset_over_root():
    spec = grid(
        {"m": {"command": "run <lr> <bs> <seed>", "hparam": {"lr": 5}}},
        {"d": {"hparam": {"_lr": [1, 2], "bs": [8, 16]}}},
        hparam={"bs": 4, "seed": 0},
    )
    cells = cells_of(spec)
    # model lr=5 replaces the dataset's whole lr axis; dataset bs [8, 16] replaces root bs=4
    assert hp(cells, "lr", "bs", "seed") == [(5, 8, 0), (5, 16, 0)]
    assert "_lr" not in cells[0].hparams
    assert sorted(c.command for c in cells) == ["run 5 16 0", "run 5 8 0"]


def test_model_shadowing_part_of_a_dataset_group_deduplicates_it():
    group = [{"lr": 1, "bs": 8}, {"lr": 2, "bs": 8}, {"lr": 3, "bs": 32}]
    spec = grid({"m": {"command": "run <lr> <bs>", "hparam": {"lr": 9}}}, {"d": {"hparam": {"g": group}}})
    assert hp(cells_of(spec), "lr", "bs") == [(9, 8), (9, 32)]


def test_hidden_names_are_substituted_but_not_in_the_name():
    spec = grid(
        {"m": {"command": "python avg.py <fn> --lr <lr>", "hparam": {"lr": 3}}},
        {"d1": {"hparam": {"_fn": "data/one.txt"}}, "d2": {"hparam": {"_fn": "data/two.txt"}}},
    )
    by_dataset = {c.dataset: c for c in cells_of(spec)}
    assert by_dataset["d1"].command == "python avg.py data/one.txt --lr 3"
    assert by_dataset["d2"].command == "python avg.py data/two.txt --lr 3"
    name = by_dataset["d1"].name
    assert name.startswith("demo-m-d1-lr-3-")
    assert "fn" not in name and "one" not in name and "txt" not in name
    assert by_dataset["d1"].visible_hparams == {"lr": 3}


def test_hidden_value_still_moves_the_hash():
    a = cell_name("p", "m", "d", {"_fn": "a.txt"})
    b = cell_name("p", "m", "d", {"_fn": "b.txt"})
    assert a != b and a.rsplit("-", 1)[0] == b.rsplit("-", 1)[0] == "p-m-d"


@pytest.mark.parametrize(
    ("target", "expected"),
    [("local", "echo L && run"), ("kubernetes", "echo R && run"), ("lambda", "echo R && run")],
)
def test_local_remote_sugar_picks_by_target(target, expected):
    spec = grid({"m": {"command": "[echo L](echo R) && run"}})
    assert [c.command for c in cells_of(spec, target=target)] == [expected]


def test_empty_local_part_drops_the_remote_step():
    assert pick_command("[](make download;) python x.py", "local") == "python x.py"
    assert pick_command("[](make download;) python x.py", "my-deployment") == "make download; python x.py"


def test_run_filter_selects_models_datasets_and_values():
    spec = grid(
        {"a": {"command": "x <lr>"}, "b": {"command": "y <lr>"}},
        {"d1": {}, "d2": {}},
        hparam={"lr": [1, 2, 3]},
        run={"models": ["b"], "datasets": ["d2"], "hparam": {"lr": [1, 3]}},
    )
    cells = cells_of(spec)
    assert [(c.model, c.dataset, c.hparams["lr"]) for c in cells] == [("b", "d2", 1), ("b", "d2", 3)]
    assert [c.command for c in cells] == ["y 1", "y 3"]


def test_builtin_placeholders_and_cell_identity_fields():
    spec = grid({"m": {"command": "run <project> <model> <dataset> <cell>"}}, target="kubernetes")
    (cell,) = cells_of(spec)
    assert cell.command == f"run demo m d {cell.name}"
    assert cell.output_uri == f"s3://bucket/runs/grids/demo/{cell.name}"
    assert cell.tags == ("grid:demo", f"cell:{cell.name}")
    assert cell.deployment == "run-command/kubernetes" and cell.pool == "kubernetes"
    assert cell.job_variables["labels"] == {"plantcad.io/grid": "demo", "plantcad.io/cell": cell.name}


def test_a_cell_round_trips_through_json_as_a_flow_parameter():
    spec = grid({"m": {"command": "x <flag>", "hparam": {"flag": True, "n": [1]}, "tolerations": ["gpu"]}})
    (cell,) = cells_of(spec, target="kubernetes")
    again = GridCell.model_validate(json.loads(json.dumps(cell.model_dump(mode="json"))))
    assert again == cell
    assert again.hparams == {"flag": True, "n": 1} and type(again.hparams["n"]) is int
    assert cell.command == "x true"


def test_dataset_command_is_used_when_the_model_has_none():
    spec = grid({"m": {"hparam": {"lr": 1}}}, {"d": {"command": "train <lr>"}})
    assert [c.command for c in cells_of(spec)] == ["train 1"]


# --- names ---------------------------------------------------------------------------------------


def test_ten_thousand_distinct_cells_get_ten_thousand_distinct_valid_names():
    # 10 x 10 x 100 = 10,000 cells; the long visible values force abbreviation and the hidden
    # axis differs only in the hash.
    spec = grid(
        {f"Model_{i}-with-a-rather-long-name": {"command": "run <seed>"} for i in range(10)},
        {f"dataset.{i}": {"hparam": {"_shard": [0, 1]}} for i in range(5)},
        hparam={"learning_rate": [f"{i}e-5" for i in range(10)], "seed": list(range(10))},
    )
    cells = cells_of(spec)
    names = [c.name for c in cells]
    assert len(cells) == 10_000
    assert len(set(names)) == 10_000
    for name in names:
        assert len(name) <= 63 and len(name) <= MAX_NAME_LENGTH, name
        assert RFC1123.match(name), name


def test_long_names_are_abbreviated_and_keep_the_full_hash():
    hparams = {"learning_rate": "0.0001", "warmup_steps_count": 500, "_secretless_hidden": "x" * 200}
    name = cell_name("proj", "PlantCAD2-Large-l48-d1536", "conservation_within_poaceae_non_tis", hparams)
    assert is_valid_name(name)
    assert name.startswith("proj-")
    assert name.endswith(
        "-" + cell_hash("PlantCAD2-Large-l48-d1536", "conservation_within_poaceae_non_tis", hparams)
    )


def test_short_names_are_not_abbreviated_and_key_order_does_not_matter():
    a = cell_name("p", "Big_Model", "maize", {"lr": 0.001, "bs": 8})
    b = cell_name("p", "Big_Model", "maize", {"bs": 8, "lr": 0.001})
    assert a == b
    assert a.startswith("p-big-model-maize-bs-8-lr-0-001-")


def test_only_cell_coordinates_move_the_name():
    base = grid({"m": {"command": "run <lr>", "hparam": {"lr": 1}, "memory": "16Gi"}})
    other = grid({"m": {"command": "other <lr>", "hparam": {"lr": 1}, "memory": "64Gi"}}, target="kubernetes")
    moved = grid({"m": {"command": "run <lr>", "hparam": {"lr": 2}}})
    assert cells_of(base)[0].name == cells_of(other)[0].name
    assert cells_of(base)[0].name != cells_of(moved)[0].name


# --- resources -----------------------------------------------------------------------------------

# field: (root, dataset, model, hparam value, value the hparam sets, default)
CHAIN = {
    "gpu_count": (1, 2, 3, 4, 4, 0),
    "cpu": ("1", "2", "500m", "8", "8", "4"),
    "memory": ("1Gi", "2Gi", "3Gi", "4Gi", "4Gi", "32Gi"),
    "ephemeral_storage": ("10Gi", "20Gi", "30Gi", "40Gi", "40Gi", "50Gi"),
    "image": ("img:root", "img:ds", "img:model", "img:hp", "img:hp", None),
    "service_account": ("sa-root", "sa-ds", "sa-model", "sa-hp", "sa-hp", None),
    "hostname_deny": (["n-root"], ["n-ds"], ["n-model"], "n-hp", ["n-hp"], None),
    "gpu_allow": (["A-root"], ["A-ds"], ["A-model"], "A-hp", ["A-hp"], None),
}


def _resources(field: str, levels: set[str]):
    root, ds, model, hp_value, _, _ = CHAIN[field]
    spec = grid(
        {"m": {"command": "x", **({field: model} if "model" in levels else {})}},
        {"d": {**({field: ds} if "dataset" in levels else {})}},
        resources={field: root} if "root" in levels else {},
        hparam={f"_{field}": [hp_value]} if "hparam" in levels else {},
    )
    (cell,) = cells_of(spec)
    return getattr(cell.resources, field)


@pytest.mark.parametrize("field", sorted(CHAIN))
def test_precedence_chain_field_by_field(field):
    root, ds, model, _, hp_set, default = CHAIN[field]
    assert _resources(field, set()) == default
    assert _resources(field, {"root"}) == root
    assert _resources(field, {"root", "dataset"}) == ds
    assert _resources(field, {"root", "dataset", "model"}) == model
    assert _resources(field, {"root", "dataset", "model", "hparam"}) == hp_set
    # each layer beats every lower one even when the middle ones are absent
    assert _resources(field, {"root", "model"}) == model
    assert _resources(field, {"dataset", "hparam"}) == hp_set


def test_precedence_chain_covers_every_scalar_and_list_field():
    assert set(CHAIN) | {"gpu_deny", "tolerations", "pvc_mounts", "env"} == set(RESOURCE_FIELDS)


def test_hparam_override_beats_the_model_and_shows_in_job_variables():
    spec = grid({"m": {"command": "x", "gpu_count": 2, "memory": "64Gi"}}, target="kubernetes")
    spec["models"]["m"]["hparam"] = {"_gpu_count": [1, 4]}
    cells = cells_of(spec)
    assert sorted(c.job_variables["gpu_count"] for c in cells) == [1, 4]
    assert {c.job_variables["memory"] for c in cells} == {"64Gi"}
    assert all(len(c.name.split("-")) == 4 for c in cells)  # demo-m-d-{hash}: hidden from the name


def test_hparam_named_like_a_resource_is_a_visible_sweep_not_a_type_error():
    spec = grid({"m": {"command": "train --gpus <gpu_count>", "hparam": {"gpu_count": [1, 2]}}})
    cells = cells_of(spec)
    assert [(c.resources.gpu_count, c.command) for c in cells] == [
        (1, "train --gpus 1"),
        (2, "train --gpus 2"),
    ]
    assert [c.name.split("-")[3:6] for c in cells] == [["gpu", "count", "1"], ["gpu", "count", "2"]]


def test_maps_merge_per_key_and_gpu_rule_is_replaced_whole():
    res = merge_resources(
        ResourceLayer(env={"A": "root", "B": "root"}, pvc_mounts={"data": "/data"}, gpu_deny=["T4"]),
        ResourceLayer(env={"B": "ds"}, pvc_mounts={"ckpt": "/ckpt"}),
        ResourceLayer(env={"C": 1}, gpu_allow=["NVIDIA-A100-SXM4-80GB"]),
    )
    assert res.env == {"A": "root", "B": "ds", "C": "1"}
    assert res.pvc_mounts == {"data": "/data", "ckpt": "/ckpt"}
    assert (res.gpu_allow, res.gpu_deny) == (["NVIDIA-A100-SXM4-80GB"], None)
    jv = kubernetes_job_variables(res)
    assert jv["gpu_products"] == ["NVIDIA-A100-SXM4-80GB"] and jv["gpu_product_operator"] == "In"
    assert jv["volumes"] == [
        {"name": "data", "persistentVolumeClaim": {"claimName": "data"}},
        {"name": "ckpt", "persistentVolumeClaim": {"claimName": "ckpt"}},
    ]
    assert jv["volume_mounts"] == [
        {"name": "data", "mountPath": "/data"},
        {"name": "ckpt", "mountPath": "/ckpt"},
    ]


def test_kubernetes_job_variables_use_the_pool_template_names_and_validate():
    template = json.loads(TEMPLATE.read_text())
    schema = template["variables"]
    assert set(KUBERNETES_VARIABLES) <= set(schema["properties"])
    spec = grid(
        {
            "m": {
                "command": "x",
                "gpu_count": 2,
                "cpu": "500m",
                "image": "registry/flows:1",
                "gpu_deny": ["Tesla-T4"],
                "hostname_deny": ["bad-node"],
                "tolerations": ["nvidia.com/gpu", {"key": "spot", "operator": "Equal", "value": "true"}],
                "pvc_mounts": {"plantcad-data": "/data"},
                "env": {"HF_HOME": "/data/hf"},
                "service_account": "runner",
            }
        },
        target="kubernetes",
    )
    (cell,) = cells_of(spec)
    jv = cell.job_variables
    assert set(jv) <= set(schema["properties"])
    jsonschema.validate(jv, {**schema, "additionalProperties": False})
    assert jv["gpu_count"] == 2 and jv["cpu"] == "500m" and jv["memory"] == "32Gi"
    assert (jv["gpu_products"], jv["gpu_product_operator"]) == (["Tesla-T4"], "NotIn")
    assert jv["tolerations"] == [
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
        {"key": "spot", "operator": "Equal", "value": "true"},
    ]
    assert jv["service_account"] == "runner" and jv["env"] == {"HF_HOME": "/data/hf"}


def test_unset_kubernetes_fields_are_left_to_the_deployment():
    jv = kubernetes_job_variables(merge_resources())
    assert jv == {"gpu_count": 0, "cpu": "4", "memory": "32Gi", "ephemeral_storage": "50Gi"}


def test_process_pool_gets_the_gpus_a_cell_may_see():
    assert process_job_variables(merge_resources()) == {"env": {"CUDA_VISIBLE_DEVICES": ""}}
    two = merge_resources(ResourceLayer(gpu_count=2, env={"X": "1"}))
    assert process_job_variables(two) == {"env": {"CUDA_VISIBLE_DEVICES": "0,1", "X": "1"}}
    pinned = merge_resources(ResourceLayer(gpu_count=1, env={"CUDA_VISIBLE_DEVICES": "3"}))
    assert process_job_variables(pinned)["env"]["CUDA_VISIBLE_DEVICES"] == "3"
    (cell,) = cells_of(grid({"m": {"command": "x", "gpu_count": 1}}), target="local")
    assert cell.job_variables["env"] == {"CUDA_VISIBLE_DEVICES": "0"} and cell.pool == "process"


# --- eval cells ----------------------------------------------------------------------------------


def test_eval_cell_fills_the_config_template_per_checkpoint(tmp_path):
    (tmp_path / "bench.yaml").write_text(
        "models: [{name: <model>, path: <ckpt>, type: mlm}]\nsplits: [{task: tis_recovery, split: test}]\n"
    )
    models = {
        f"step{s}": {"hparam": {"_ckpt": f"/ckpt/{s}"}, "gpu_count": g} for s, g in ((100, 1), (200, 2))
    }
    path = tmp_path / "grid.yaml"
    path.write_text(
        json.dumps(grid(models, {"benchmark": {"eval": "bench.yaml"}}, target="kubernetes"))
    )  # JSON is YAML
    seen = []
    cells = plan_grid(path, check_eval=lambda c: seen.append(c) or c)
    assert [c.kind for c in cells] == ["eval", "eval"] and len(seen) == 2
    assert cells[0].eval_config["models"] == [{"name": "step100", "path": "/ckpt/100", "type": "mlm"}]
    assert cells[1].eval_config["executor"] == {"prefix": cells[1].output_uri}
    assert [c.job_variables["gpu_count"] for c in cells] == [1, 2]
    assert cells[0].deployment == "zero-shot-eval/kubernetes" and cells[0].command is None


def test_eval_config_rejected_by_the_checker_names_the_cell(tmp_path):
    (tmp_path / "bench.yaml").write_text("models: []\n")
    path = tmp_path / "grid.yaml"
    path.write_text(json.dumps(grid({"m": {"eval": "bench.yaml"}})))

    def reject(config):
        raise ValidationError("models", [], "at least one model")

    with pytest.raises(ValidationError) as e:
        plan_grid(path, check_eval=reject)
    assert str(e.value).startswith("models.m.eval='demo-m-d-") and "at least one model" in str(e.value)


# --- bad specs: one line, naming the field -------------------------------------------------------

BAD = {
    "unknown key": (grid(models={"m": {"comand": "x"}}), "models.m.comand=", "did you mean 'command'"),
    "unknown root key": (grid(extra=1), "extra=1", "unknown key"),
    "unknown model in run": (grid(run={"models": ["mm"]}), "run.models='mm'", "did you mean 'm'"),
    "zipped groups with different keys": (
        grid(hparam={"g": [{"a": 1, "b": 2}, {"a": 1, "c": 2}]}),
        "hparam.g=",
        "different keys",
    ),
    "placeholder with no value": (
        grid(models={"m": {"command": "run <lr>"}}),
        "models.m.command='<lr>'",
        "no value in cell demo-m-d-",
    ),
    "memory without a unit": (grid(resources={"memory": 16}), "resources.memory=16", "bytes"),
    "memory with a wrong unit": (
        grid(models={"m": {"command": "x", "memory": "16GB"}}),
        "models.m.memory='16GB'",
        "unit",
    ),
    "cpu with a wrong unit": (grid(datasets={"d": {"cpu": "4 cores"}}), "datasets.d.cpu='4 cores'", "CPU"),
    "hparam resource with a wrong unit": (
        grid(models={"m": {"command": "x", "hparam": {"_memory": ["16G", "16GB"]}}}),
        "models.m.hparam._memory='16GB'",
        "cell demo-m-d-",
    ),
    "two cells with the same name": (grid(hparam={"lr": [1, 1]}), "cells='demo-m-d-lr-1-", "same name"),
    "unknown hparam in run": (
        grid(hparam={"lr": 1}, run={"hparam": {"lrr": [1]}}),
        "run.hparam='lrr'",
        "'lr'",
    ),
    "run value matching nothing": (
        grid(hparam={"lr": [1]}, run={"hparam": {"lr": [2]}}),
        "run.hparam.lr='2'",
        "",
    ),
    "secret in env": (grid(resources={"env": {"HF_TOKEN": "hf_abc"}}), "resources.env.HF_TOKEN=", "secret"),
    "null value": (grid(hparam={"lr": None}), "hparam.lr=None", "no value"),
    "both allow and deny": (
        grid(resources={"gpu_allow": ["a"], "gpu_deny": ["b"]}),
        "resources.gpu_deny=",
        "not both",
    ),
    "bad project": (grid(project="My_Project"), "project='My_Project'", "lower case"),
    "unsupported prefix": (grid(prefix="gs://b"), "prefix='gs://b'", "s3://"),
    "unknown target without pool": (grid(target="my-deployment"), "pool=None", "set pool"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_spec_fails_with_one_line_naming_the_field(case):
    spec, starts, contains = BAD[case]
    with pytest.raises(ValidationError) as e:
        cells_of(spec)
    message = str(e.value)
    assert "\n" not in message
    assert message.startswith(starts), message
    assert contains in message, message
    assert "hf_abc" not in message  # a secret's value is never echoed


def test_unknown_model_in_run_is_an_unknown_name_error():
    with pytest.raises(UnknownNameError):
        parse_grid(grid(run={"datasets": ["dd"]}))


def test_yaml_syntax_error_names_file_and_line(tmp_path):
    path = tmp_path / "grid.yaml"
    path.write_text("project: demo\nmodels:\n  m: {command: x\n")
    with pytest.raises(ValidationError) as e:
        load_grid(path)
    assert str(e.value).startswith(f"{path}:4:") and "\n" not in str(e.value)


def test_duplicate_yaml_key_is_an_error_not_an_overwrite(tmp_path):
    path = tmp_path / "grid.yaml"
    path.write_text(
        "project: demo\nprefix: out\nmodels:\n  m: {command: a}\n  m: {command: b}\ndatasets: {d: {}}\n"
    )
    with pytest.raises(ValidationError, match=rf"^{re.escape(str(path))}:5:3=.*duplicate key 'm'"):
        load_grid(path)


# --- the shipped example -------------------------------------------------------------------------


def test_example_grid_has_twelve_cells_whose_commands_write_metrics(tmp_path):
    cells = plan_grid(REPO / "configs" / "grid-example.yaml")
    assert len(cells) == 12 and len({c.name for c in cells}) == 12
    assert {(c.model, c.dataset) for c in cells} == {
        (m, d) for m in ("mean", "median") for d in ("small", "large")
    }
    cell = next(c for c in cells if (c.model, c.dataset, c.hparams["seed"]) == ("median", "small", 2))
    subprocess.run(
        cell.command.replace("python ", f"{sys.executable} ", 1), shell=True, cwd=tmp_path, check=True
    )
    metrics = json.loads((tmp_path / "outputs" / "metrics.json").read_text())
    assert metrics["n"] == 20 and metrics["seed"] == 2 and isinstance(metrics["estimate"], float)


def test_grid_logs_lines_counts_lines_not_records():
    from plantcad_flows.cli.grid import last_lines

    records = ["started", "epoch 1\nepoch 2\nepoch 3", "a\nb\nc\nd\ne\nf\ng\nh\ni"]
    assert last_lines(records, 8) == ["epoch 3", "b", "c", "d", "e", "f", "g", "h", "i"][-8:]
    assert len(last_lines(records, 8)) == 8 and last_lines(records, 0) == []
