"""The leaderboard view on hand-computed cases: the better strand per task (never per example,
never averaged), group means, the composite, missing tasks, the files and the command.

Pure logic on result rows, with `tmp_path`; no Prefect, no model.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from plantcad_flows.families import builtin_tasks
from plantcad_flows.results.leaderboard import build_views, slots, table_rows, write_views

SLOTS = slots(builtin_tasks())


def _row(slot, value, strand="fwd", model="m", ctx=512, n=100):
    return {
        "model": model,
        "task": slot.task,
        "split": slot.split,
        "strand": strand,
        "context_bp": ctx,
        slot.entry.metric: value,
        "num_examples": n,
    }


def _full(fwd: dict[str, float], rc: dict[str, float] | None = None, **kw) -> list[dict]:
    rows = [_row(s, fwd[s.entry.task_id], **kw) for s in SLOTS if s.entry.task_id in fwd]
    rows += [_row(s, rc[s.entry.task_id], "rc", **kw) for s in SLOTS if s.entry.task_id in (rc or {})]
    return rows


def _by_id(view):
    return {s.slot.entry.task_id: s for s in view.scores}


def test_the_shipped_tasks_map_to_the_twenty_leaderboard_ids_in_four_groups():
    ids = [s.entry.task_id for s in SLOTS]
    assert len(ids) == len(set(ids)) == 20
    groups = {}
    for s in SLOTS:
        groups[s.entry.group] = groups.get(s.entry.group, 0) + 1
    assert groups == {"conservation": 3, "masked_motif": 8, "core_noncore": 8, "structural_variant": 1}
    assert {s.entry.task_id for s in SLOTS if s.entry.strands == ("fwd",)} == {"sv_impact_auprc"}


def test_the_better_strand_of_the_whole_task_is_selected_and_sv_is_forward_only():
    fwd = {s.entry.task_id: 0.5 for s in SLOTS}
    fwd |= {"cons_andropogoneae": 0.70, "motif_maize_donor": 0.90, "sv_impact_auprc": 0.40}
    rc = {"cons_andropogoneae": 0.80, "motif_maize_donor": 0.90, "sv_impact_auprc": 0.99}
    (view,) = build_views(_full(fwd, rc), builtin_tasks())
    got = _by_id(view)
    assert (got["cons_andropogoneae"].selected, got["cons_andropogoneae"].selected_strand) == (0.80, "rc")
    assert got["motif_maize_donor"].selected_strand == "fwd"  # a tie keeps the forward strand
    assert (got["sv_impact_auprc"].selected, got["sv_impact_auprc"].note) == (0.40, "fwd only")
    assert got["cons_poaceae_tis"].note == "fwd (rc not evaluated)"
    assert got["cons_andropogoneae"].note == "best of fwd/rc: rc"


def test_group_means_and_composite_by_hand():
    fwd = {}
    for s in SLOTS:
        fwd[s.entry.task_id] = {
            "conservation": 0.6,
            "masked_motif": 0.8,
            "core_noncore": 0.7,
            "structural_variant": 0.3,
        }[s.entry.group]
    fwd["cons_poaceae_tis"] = 0.9  # conservation: (0.6 + 0.6 + 0.9) / 3 = 0.7
    rc = {"motif_tomato_acceptor": 1.0}  # masked motif: (7 * 0.8 + 1.0) / 8 = 0.825
    (view,) = build_views(_full(fwd, rc), builtin_tasks())
    assert view.groups == pytest.approx(
        {"conservation": 0.7, "masked_motif": 0.825, "core_noncore": 0.7, "structural_variant": 0.3}
    )
    assert view.composite == pytest.approx((0.7 + 0.825 + 0.7 + 0.3) / 4)  # 0.63125
    assert view.missing == []


def test_missing_tasks_are_listed_and_never_averaged_over():
    fwd = {
        s.entry.task_id: 0.5
        for s in SLOTS
        if s.entry.task_id not in ("motif_tomato_donor", "sv_impact_auprc")
    }
    (view,) = build_views(_full(fwd), builtin_tasks())
    assert view.missing == ["motif_tomato_donor", "sv_impact_auprc"]
    assert view.groups["masked_motif"] is None and view.groups["structural_variant"] is None
    assert view.groups["conservation"] == 0.5 and view.composite is None
    table = {r["task_id"]: r for r in table_rows([view])}
    assert table["motif_tomato_donor"]["value"] is None
    assert table["motif_tomato_donor"]["note"].startswith("missing")
    # a metric that came back NaN is missing too, not a zero
    rows = _full({s.entry.task_id: 0.5 for s in SLOTS})
    rows[0][SLOTS[0].entry.metric] = float("nan")
    (view,) = build_views(rows, builtin_tasks())
    assert view.missing == [SLOTS[0].entry.task_id]


def test_one_view_per_model_and_context_and_rows_off_the_board_are_ignored():
    rows = _full({"cons_andropogoneae": 0.6}, ctx=512) + _full({"cons_andropogoneae": 0.7}, ctx=8192)
    rows += _full({"cons_andropogoneae": 0.8}, model="other", ctx=512)
    rows.append({"model": "m", "task": "my_task", "split": "test", "strand": "fwd", "context_bp": 512})
    views = build_views(rows, builtin_tasks())
    assert [(v.model, v.context_bp) for v in views] == [("m", 512), ("m", 8192), ("other", 512)]
    assert [_by_id(v)["cons_andropogoneae"].selected for v in views] == [0.6, 0.7, 0.8]
    assert all(len(v.missing) == 19 for v in views)


def test_files_in_the_teams_shape_under_the_run_directory(tmp_path):
    fwd = {s.entry.task_id: 0.5 for s in SLOTS}
    rc = {"cons_andropogoneae": 0.75}
    views = build_views(_full(fwd, rc, model="org/m@step-5"), builtin_tasks())
    written = write_views(str(tmp_path), views, {"sampling": {"seed": 3}})
    d = tmp_path / "leaderboard" / "org--m@step-5" / "512"
    assert (tmp_path / "leaderboard" / "provenance.json").exists()
    assert written["plantcad2"] == [
        str(tmp_path / "leaderboard" / "leaderboard.tsv"),
        *(str(d / n) for n in ("result.json", "leaderboard.tsv", "summary.md")),
    ]
    doc = json.loads((d / "result.json").read_text())
    assert {"model", "condition", "sampling", "runtime", "rows"} <= set(doc)
    assert doc["sampling"]["seed"] == 3 and doc["sampling"]["samples_per_task"] == 100
    row = doc["rows"][0]
    assert row == {
        "key": "cons_andropogoneae",
        "category": "conservation",
        "task": "conservation_within_andropogoneae/test",
        "metric": "auroc",
        "samples": 100,
        "selected_context": "right_reverse_complement",
        "selected_value": 0.75,
        "left": 0.5,
        "reverse_complement": 0.75,
    }
    assert doc["rows"][-1]["reverse_complement"] is None  # SV: forward only
    combined = (tmp_path / "leaderboard" / "leaderboard.tsv").read_text().splitlines()
    assert combined[0] == "model\ttask_id\tvalue\tcontext_bp\tnote" and len(combined) == 21
    assert combined[1] == "org/m@step-5\tcons_andropogoneae\t0.75\t512\tbest of fwd/rc: rc"
    tsv = (d / "leaderboard.tsv").read_text().splitlines()
    assert tsv[0].split("\t")[-2:] == ["left", "reverse_complement"]
    assert "composite" in (d / "summary.md").read_text()
    # written again without provenance (the command), the flow's is kept
    write_views(str(tmp_path), views)
    assert json.loads((d / "result.json").read_text())["sampling"]["seed"] == 3


def test_mlm_reverse_strand_masks_and_reads_the_mirrored_positions_of_the_reverse_complement():
    """The rc pass of an MLM: the window is reverse-complemented, the mask token and the read sit
    at L-1-i (for 8,192 bp and masks 4094..4096: 4095..4097), and the true bases stay forward."""
    from plantcad_flows.config import ModelConfig, SplitConfig

    split = SplitConfig(task="tis_recovery", split="test_maize")
    seen = []

    def run(inp):
        seen.append(inp)
        n, p = len(inp.sequences), inp.gather.shape[1]
        return np.zeros((n, p, 4), np.float32), np.zeros((n, p), np.uint8)

    family = split.family
    for ctx in (8192, 512):
        model = ModelConfig(path="x", type="mlm", context_length=ctx)
        family.probabilities(model, split, ["A" * 8192], run, strand="fwd")
        family.probabilities(model, split, ["A" * 8192], run, strand="rc")
    fwd, rc, fwd512, rc512 = seen
    assert not fwd.reverse and rc.reverse
    assert fwd.mask_positions.tolist() == [4094, 4095, 4096]
    assert rc.mask_positions.tolist() == rc.gather[0].tolist() == [4097, 4096, 4095]
    assert rc.base_positions.tolist() == fwd.base_positions.tolist() == [[4094, 4095, 4096]]
    # centre crop to 512: trim 3840 each side, the same mirror inside the window
    assert fwd512.mask_positions.tolist() == [254, 255, 256]
    assert rc512.mask_positions.tolist() == [257, 256, 255]


def test_cli_exit_codes_and_printed_view(tmp_path, capsys):
    from plantcad_flows.cli import main
    from plantcad_flows.results.table import CellResult, write_results

    prefix = tmp_path / "p"
    assert main(["leaderboard", "--prefix", str(prefix)]) == 2
    assert "--prefix=" in capsys.readouterr().err
    results = [
        CellResult(
            cell_id="m/conservation_within_andropogoneae/test",
            model="m",
            task="conservation_within_andropogoneae",
            split="test",
            strand=strand,
            context_bp=512,
            dataset="d",
            family="evolutionary_conservation",
            status="completed",
            metrics={"auroc": value, "auprc": 0.5, "num_examples": 10},
        )
        for strand, value in (("fwd", 0.6), ("rc", 0.65))
    ]
    write_results(str(prefix / "runs" / "first"), results)
    assert main(["leaderboard", "--prefix", str(prefix), "--run", "frist"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--run='frist'" in err[0] and "first" in err[0]
    assert main(["leaderboard", "--prefix", str(prefix)]) == 0
    out = capsys.readouterr().out
    assert "m @ 512 bp" in out and "missing (19)" in out and "0.6500" in out
    assert (prefix / "runs" / "first" / "leaderboard" / "m" / "512" / "result.json").exists()
    # a run none of whose results is on a leaderboard
    off = [r.model_copy(update={"task": "my_task"}) for r in results]
    write_results(str(prefix / "runs" / "second"), off)
    assert main(["leaderboard", "--prefix", str(prefix), "--run", "second"]) == 2
    assert "none of its results" in capsys.readouterr().err


LETTUCE = """
- name: lettuce_tis_recovery
  family: motif_recovery
  splits: [test]
  mask_positions: [4094, 4095, 4096]
  strands: [fwd, rc]
  leaderboard:
    test: {task_id: motif_lettuce_start_sites, group: masked_motif, metric: %s, board: lettuce}
"""


def test_a_users_task_joins_a_view_of_its_own(tmp_path):
    from plantcad_flows.families import task_registry

    path = tmp_path / "lettuce.yaml"
    path.write_text(LETTUCE % "motif_accuracy")
    tasks = task_registry([str(path)])
    assert tasks["lettuce_tis_recovery"].strands == ("fwd", "rc")
    rows = [
        {
            "model": "m",
            "task": "lettuce_tis_recovery",
            "split": "test",
            "strand": s,
            "context_bp": 512,
            "motif_accuracy": v,
        }
        for s, v in (("fwd", 0.4), ("rc", 0.6))
    ] + _full({"cons_andropogoneae": 0.5})
    views = build_views(rows, tasks)
    assert [(v.board, v.model) for v in views] == [("lettuce", "m"), ("plantcad2", "m")]
    assert views[0].composite == 0.6 and views[0].missing == []
    written = write_views(str(tmp_path / "run"), views)
    assert written["lettuce"][0] == str(tmp_path / "run" / "leaderboard-lettuce" / "leaderboard.tsv")


def test_a_bad_leaderboard_entry_is_one_line_naming_file_task_and_field(tmp_path):
    from plantcad_flows.errors import ValidationError
    from plantcad_flows.families import task_registry

    path = tmp_path / "lettuce.yaml"
    path.write_text(LETTUCE % "auroc")
    with pytest.raises(ValidationError) as e:
        task_registry([str(path)])
    assert str(e.value).startswith(f"{path}: tasks[lettuce_tis_recovery].leaderboard[test].metric='auroc'")
    assert "\n" not in str(e.value)
