"""`plantcad-flows eval` as users run it, in a subprocess: the PlantCAD pipeline config format,
the dry-run plan, `--only`, one-line errors with exit status 2, no flow run for bad input, and
the plan's `cached` status after a real run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from conftest import eval_config
from servers import run_cli

from plantcad_flows.config import load_config
from plantcad_flows.layout.plan import build_cells

# A config as PlantCAD users write it (models/splits/compute/sampling/executor only): hub ids
# that cannot be downloaded here, so a dry run that tried to load a model would fail. Models and
# dataset are pinned to commits (40 hex), which resolve with no network call (HF_HUB_OFFLINE=1).
PLANTCAD_YAML = """\
models:
  - path: kuleshov-group/PlantCAD2-Small-l24-d0768
    name: PlantCAD2-Small
    type: mlm
    context_length: 8192
    revision: "1111111111111111111111111111111111111111"
  - path: kuleshov-group/PlantCAD2-Large-l48-d1536
    subfolder: ""
    type: mlm
    context_length: 8192
    revision: "2222222222222222222222222222222222222222"
  - path: my-lab/plant-dna-clm
    name: plant-clm
    type: clm
    context_length: 8192
    motif_inference_mode: fwd_rc_avg
    revision: "3333333333333333333333333333333333333333"
splits:
  - task: conservation_within_andropogoneae
    split: test
    revision: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa
  - task: acceptor_recovery
    split: test_maize
    repo_id: plantcad/PlantCAD2_zero_shot_tasks
    revision: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa
    seq_column: sequence
    label_column: label
    seq_length: 8192
    overrides:
      mask_token_indexes: [4095, 4096]
  - task: tis_core_noncore_classification
    split: test_tomato
    revision: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa
    overrides:
      motif_len: 3
  - task: structural_variant_effect_prediction
    split: test
    revision: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa
    overrides:
      flanking: 5
compute:
  device: cuda
  batch_size: 32
  num_workers: 4
sampling:
  rate: 0.5
  max_size: 1000
  seed: 42
executor:
  prefix: {prefix}
  force_run_failed: true
"""


def plan_lines(stdout: str) -> dict[str, str]:
    """cell id -> the rest of its line in the printed plan."""
    out = {}
    for line in stdout.splitlines()[1:-1]:
        cell_id, rest = line.split(None, 1)
        out[cell_id] = rest
    return out


def write_yaml(path: Path, text_or_data) -> Path:
    path.write_text(text_or_data if isinstance(text_or_data, str) else yaml.safe_dump(text_or_data))
    return path


@pytest.fixture
def plantcad_config(tmp_path) -> Path:
    return write_yaml(tmp_path / "plantcad.yaml", PLANTCAD_YAML.format(prefix=tmp_path / "evals"))


def test_plantcad_format_dry_run(plantcad_config, tmp_path):
    proc = run_cli("eval", plantcad_config, "--dry-run", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    cells = build_cells(load_config(plantcad_config))
    assert len(cells) == 12
    lines = plan_lines(proc.stdout)
    assert set(lines) == {c.id for c in cells}
    assert "kuleshov-group/PlantCAD2-Large-l48-d1536/acceptor_recovery/test_maize" in lines  # name = path
    for c in cells:
        status, output = lines[c.id].split("  ", 1)[0], lines[c.id]
        assert c.dir in output and c.dir.startswith(str(tmp_path / "evals" / "score_cell-"))
        if c.id == "plant-clm/structural_variant_effect_prediction/test":
            assert "skipped (unsupported)" in output and "causal" in output
        else:
            assert status == "to run", lines[c.id]
    assert proc.stdout.splitlines()[-1] == "0 cached, 11 to run, 0 failed before, 1 skipped (unsupported)"
    assert not (tmp_path / "evals").exists()  # planning writes nothing


def test_only_filters_cells(plantcad_config, tmp_path):
    proc = run_cli("eval", plantcad_config, "--dry-run", "--only", "^PlantCAD2-Small/|recovery", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert set(plan_lines(proc.stdout)) == {
        "PlantCAD2-Small/conservation_within_andropogoneae/test",
        "PlantCAD2-Small/acceptor_recovery/test_maize",
        "PlantCAD2-Small/tis_core_noncore_classification/test_tomato",
        "PlantCAD2-Small/structural_variant_effect_prediction/test",
        "kuleshov-group/PlantCAD2-Large-l48-d1536/acceptor_recovery/test_maize",
        "plant-clm/acceptor_recovery/test_maize",
    }
    assert proc.stdout.splitlines()[-1] == "0 cached, 6 to run, 0 failed before, 0 skipped (unsupported)"


@pytest.mark.parametrize("dry_run", [True, False], ids=["dry-run", "run"])
def test_only_matching_nothing_exits_2_listing_the_plan(plantcad_config, tmp_path, dry_run):
    args = ["--dry-run"] if dry_run else ["--server-port", "1"]  # a run would fail on port 1
    proc = run_cli("eval", plantcad_config, *args, "--only", "PlantCAD3", cwd=tmp_path)
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("config error: only='PlantCAD3': matches no cell"), lines
    assert "the plan's cells: PlantCAD2-Small/conservation_within_andropogoneae/test, " in lines[0]
    assert "Prefect" not in proc.stdout and not (tmp_path / "evals").exists()


def _config_with(tmp_path: Path, edit) -> Path:
    data = yaml.safe_load(PLANTCAD_YAML.format(prefix=tmp_path / "evals"))
    edit(data)
    return write_yaml(tmp_path / "edited.yaml", data)


def _errors(proc) -> list[str]:
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert lines and all(line.startswith("config error") for line in lines), proc.stderr
    return lines


@pytest.mark.parametrize(
    "edit,expected",
    [
        (lambda d: d.update(gpus=8), ["config error: gpus=8: unknown key"]),
        (lambda d: d["compute"].update(gpus=8), ["config error: compute.gpus=8: unknown key"]),
        (
            lambda d: d["models"][1].update(tokenizer="x"),
            ["config error: models[1].tokenizer='x': unknown key"],
        ),
        (
            lambda d: d["splits"][1]["overrides"].update(mask_len=2),
            # overrides are the task family's settings: it checks them, naming the split
            [
                "config error at splits[1]: splits[acceptor_recovery/test_maize].overrides.mask_len=2: "
                "unknown key"
            ],
        ),
        (
            lambda d: (d["executor"].update(retries=2), d["sampling"].update(fraction=0.1)),
            [
                "config error: sampling.fraction=0.1: unknown key",
                "config error: executor.retries=2: unknown key",
            ],
        ),
    ],
    ids=["top-level", "compute.gpus", "models[1]", "overrides", "two-keys"],
)
def test_unknown_keys_are_rejected(tmp_path, edit, expected):
    lines = _errors(run_cli("eval", _config_with(tmp_path, edit), "--dry-run", cwd=tmp_path))
    assert [line.split(" (")[0] for line in lines] == expected  # then the keys that are valid there
    assert all(" (valid: " in line or " (did you mean " in line for line in lines), lines


@pytest.mark.parametrize(
    "edit,needles",
    [
        (
            lambda d: d["splits"][2].update(task="tis_core_noncore_clasification"),
            [
                "splits[2].task",
                "splits[].task='tis_core_noncore_clasification'",
                "unknown name",
                "did you mean 'tis_core_noncore_classification'?",
            ],
        ),
        (
            lambda d: d["models"][2].update(motif_inference_mode="fwd_rc_average"),
            [
                "models[2].motif_inference_mode",
                "models[].motif_inference_mode='fwd_rc_average'",
                "did you mean 'fwd_rc_avg'?",
                "valid: fwd_only, fwd_rc_avg, rc_only",
            ],
        ),
        (
            lambda d: d["models"][0].update(motif_inference_mode="rc_only"),
            ["models[].motif_inference_mode='rc_only'", "only fwd_only is supported for type mlm"],
        ),
        (lambda d: d["models"][0].update(type="rnn"), ["models[].type='rnn'", "valid: clm, mlm"]),
        (
            lambda d: d["splits"][1].update(split="test_rice"),
            ["splits[acceptor_recovery].split='test_rice'", "test_maize"],
        ),
        (lambda d: d["compute"].update(device="tpu"), ["compute.device='tpu'", "cpu, cuda or cuda:N"]),
    ],
    ids=["task", "mode", "mode-for-mlm", "type", "split", "device"],
)
def test_bad_values_name_field_and_value(tmp_path, edit, needles):
    lines = _errors(run_cli("eval", _config_with(tmp_path, edit), "--dry-run", cwd=tmp_path))
    assert len(lines) == 1
    for n in needles:
        assert n in lines[0], (n, lines[0])


def test_bad_only_regex_and_bad_yaml(plantcad_config, tmp_path):
    lines = _errors(run_cli("eval", plantcad_config, "--dry-run", "--only", "(unclosed", cwd=tmp_path))
    assert len(lines) == 1 and "only='(unclosed'" in lines[0] and "invalid regex" in lines[0]
    broken = write_yaml(tmp_path / "broken.yaml", "models: [\n  - path: x\n")
    lines = _errors(run_cli("eval", broken, "--dry-run", cwd=tmp_path))
    assert lines == [
        f"config error: invalid YAML in {broken} at line 2, column 3: "
        "expected the node content, but found '-'"
    ]


# ------------------------------------------------------------------ against a real Prefect server


def _count_flow_runs() -> int:
    from prefect import get_client

    with get_client(sync_client=True) as client:
        return client.count_flow_runs()


@pytest.mark.slow
def test_bad_config_creates_no_flow_run_and_plan_shows_cached(
    prefect_server, small_models, synthetic_dir, tmp_path
):
    prefix = tmp_path / "evals"
    cfg = eval_config(small_models, synthetic_dir, prefix, tasks=(("tis_recovery", "test_maize"),))
    cfg["models"] = cfg["models"][:1]
    good = write_yaml(tmp_path / "good.yaml", cfg)

    before = _count_flow_runs()
    bad_inputs = {
        "syntax.yaml": "models: [\n  - path: x\n",
        "unknown.yaml": yaml.safe_dump({**cfg, "compute": {**cfg["compute"], "gpus": 2}}),
        "task.yaml": yaml.safe_dump({**cfg, "splits": [{**cfg["splits"][0], "task": "tis_recov"}]}),
    }
    for name, text in bad_inputs.items():
        proc = run_cli("eval", write_yaml(tmp_path / name, text), cwd=tmp_path, api_url=prefect_server)
        assert proc.returncode == 2, (name, proc.stdout, proc.stderr)
        assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert _count_flow_runs() == before
    assert not prefix.exists()

    # the dry run before and after a real run (in-process, threads instead of Ray)
    proc = run_cli("eval", good, "--dry-run", cwd=tmp_path, api_url=prefect_server)
    assert proc.returncode == 0, proc.stderr
    assert plan_lines(proc.stdout)["mlm/tis_recovery/test_maize"].startswith("to run")

    from flows.zero_shot_eval import zero_shot_eval

    state = zero_shot_eval(load_config(good), return_state=True)
    assert state.is_completed(), state.message
    assert _count_flow_runs() == before + 1  # the count does see runs on this server

    proc = run_cli("eval", good, "--dry-run", cwd=tmp_path, api_url=prefect_server)
    assert proc.returncode == 0, proc.stderr
    cell = build_cells(load_config(good))[0]
    line = plan_lines(proc.stdout)["mlm/tis_recovery/test_maize"]
    assert line.startswith("cached") and cell.dir in line
    assert proc.stdout.splitlines()[-1].startswith("1 cached, 0 to run")
    proc = run_cli("eval", good, "--dry-run", "--force", cwd=tmp_path, api_url=prefect_server)
    assert plan_lines(proc.stdout)["mlm/tis_recovery/test_maize"].startswith("to run")
    assert _count_flow_runs() == before + 1  # dry runs never create flow runs

    # the real command on the same prefix: one more flow run, everything from cache
    out_json = tmp_path / "results.json"
    proc = run_cli(
        "eval", good, "--results-json", out_json, cwd=tmp_path, api_url=prefect_server, timeout=300
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1 cells: 0 scored, 1 from cache, 0 skipped, 0 failed" in proc.stdout
    assert f"using the Prefect server at {prefect_server}" in proc.stdout
    assert f"{prefect_server.removesuffix('/api')}/runs/flow-run/" in proc.stdout
    rows = json.loads(out_json.read_text())
    assert [(r["model"], r["task"], r["split"]) for r in rows] == [("mlm", "tis_recovery", "test_maize")]
    assert rows[0]["num_examples"] == 16
    assert _count_flow_runs() == before + 2


@pytest.mark.slow
def test_a_run_resolves_its_identities_once(
    prefect_server, small_models, synthetic_dir, tmp_path, monkeypatch
):
    """`eval` resolves before it starts the run (what cannot be resolved exits 2 with no flow run)
    and passes that resolution to the run as a flow parameter: the hub is asked and the data hashed
    once per command. A run started without one (a deployment run) resolves by itself."""
    import plantcad_flows.identity.resolve as resolve_mod
    from plantcad_flows.cli import main

    resolved: list[str] = []
    real = resolve_mod.resolve

    def counting(config):
        resolved.append(config.models[0].name)
        return real(config)

    monkeypatch.setattr(resolve_mod, "resolve", counting)
    cfg = eval_config(
        small_models, synthetic_dir, tmp_path / "evals", tasks=(("tis_recovery", "test_maize"),)
    )
    cfg["models"] = cfg["models"][:1]
    path = write_yaml(tmp_path / "one.yaml", cfg)

    assert main(["eval", str(path)]) == 0
    assert resolved == ["mlm"]  # the command's own resolve; the flow run took it as its parameter

    from flows.zero_shot_eval import zero_shot_eval

    assert zero_shot_eval(load_config(path), return_state=True).is_completed()
    assert resolved == ["mlm", "mlm"]  # no resolution passed: the run resolved by itself
