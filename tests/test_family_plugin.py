"""A new family with settings of its own is one module plus YAML: no edit to the config, the
steps, the cache keys or the identity code. The family here (a two-window "paired conservation":
two windows of a sequence are masked at once, the score is the mean probability of their true
bases) is defined in this test module and registered as a plugin; its task is a YAML file; it is
planned, prepared, scored, finalised and cached by the pipeline's own steps. Its settings are
its own: checked by it (an unknown key is one line naming the file, the task and the field),
and in its cells' keys (editing them in the YAML re-scores the task)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import yaml
from model_factory import save_tiny_mlm
from pydantic import Field

from plantcad_flows import steps
from plantcad_flows.config import EvalConfig
from plantcad_flows.errors import ValidationError
from plantcad_flows.families import FAMILIES, ModelInputs, TaskFamily, labels_of, read_task_file
from plantcad_flows.families.base import FamilySettings, SplitLike, checked_sequences
from plantcad_flows.families.measures import MetricInputs, classification_metrics, reference_scores
from plantcad_flows.families.registry import register
from plantcad_flows.layout.plan import build_cells
from plantcad_flows.layout.sharding import plan_shards
from plantcad_flows.sequences import crop_plan

LENGTH = 64


class PairedSettings(FamilySettings):
    """Two windows [start, stop) of the sequence, masked together."""

    windows: tuple[tuple[int, int], tuple[int, int]]
    min_gap: int = Field(default=1, ge=0)


class PairedConservation(TaskFamily):
    name = "paired_conservation"
    description = "two windows masked at once; mean probability of their true bases; AUROC"
    metrics = ("auroc", "auprc")
    settings_model = PairedSettings

    def positions(self, split: SplitLike) -> np.ndarray:
        (a, b), (c, d) = self.settings_of(split.definition).windows
        return np.r_[np.arange(a, b), np.arange(c, d)].astype(np.int64)

    def check_task(self, where, task) -> None:
        s = self.settings_of(task)
        (a, b), (c, d) = s.windows
        if not (0 <= a < b <= c - s.min_gap and c < d <= task.seq_length):
            raise ValidationError(
                f"{where}.windows", [list(w) for w in s.windows], "need two ordered windows"
            )

    def cell_key_fields(self, split: SplitLike) -> dict[str, object]:
        return {"windows": self.positions(split).tolist()}

    def sequence_columns(self, split):
        return (split.seq_column,)

    def frame(self, rows, keep, split):
        out = pd.DataFrame({"row_index": keep})
        out["label"] = labels_of(rows, split, binary=True)
        out["sequence"] = checked_sequences(rows, split.seq_column, split, keep)
        return out

    def score(self, model, split, frame, run, strand="fwd"):
        pos = self.positions(split)
        inp = ModelInputs(
            frame["sequence"].tolist(),
            crop_plan(split.seq_length, model.context_length),
            False,
            pos,
            pos[None, :],
            np.ones((1, len(pos)), bool),
            pos[None, :],
        )
        probs, bases = run(inp)
        return probs, bases, reference_scores(probs, bases)

    def metrics_of(self, predictions, notes=None):
        return classification_metrics(
            predictions["score"].to_numpy(), predictions["label"].to_numpy(), notes=notes
        )

    def metric_inputs(self, predictions):
        return MetricInputs.classification(self.metrics, predictions)


@pytest.fixture
def family(monkeypatch):
    monkeypatch.delitem(FAMILIES, PairedConservation.name, raising=False)
    register(PairedConservation)
    yield FAMILIES[PairedConservation.name]
    FAMILIES.pop(PairedConservation.name, None)


def _task(**settings) -> dict:
    return {
        "name": "paired_toy",
        "family": "paired_conservation",
        "splits": ["test"],
        "seq_length": LENGTH,
        "windows": [[10, 14], [40, 44]],
        **settings,
    }


@pytest.fixture
def setup(tmp_path, family):
    rng = np.random.default_rng(0)
    seqs = ["".join(rng.choice(list("ACGT"), LENGTH)) for _ in range(24)]
    data = tmp_path / "paired.parquet"
    pd.DataFrame({"sequence": seqs, "label": np.arange(24) % 2}).to_parquet(data)
    model = save_tiny_mlm(tmp_path / "mlm", max_len=LENGTH)
    return tmp_path, data, model


def _config(tmp_path, data, model, task: dict) -> EvalConfig:
    tasks = tmp_path / "paired.yaml"
    tasks.write_text(yaml.safe_dump({"defaults": {"dataset": {"repo": None}}, "tasks": [task]}))
    return EvalConfig.model_validate(
        {
            "task_files": [str(tasks)],
            "models": [{"name": "mlm", "path": str(model), "type": "mlm", "context_length": LENGTH}],
            "splits": [{"task": "paired_toy", "split": "test", "path": str(data)}],
            "compute": {"batch_size": 5},
            "executor": {"prefix": str(tmp_path / "out")},
        }
    )


def test_a_family_of_ones_own_runs_through_the_pipeline_from_yaml(setup):
    tmp_path, data, model = setup
    [cell] = build_cells(_config(tmp_path, data, model, _task()))
    assert cell.split.definition.settings == {"windows": [[10, 14], [40, 44]]}
    assert cell.fields["windows"] == [10, 11, 12, 13, 40, 41, 42, 43]  # the family's own key field
    prepared = steps.prepare(cell.split_job)
    outputs = [steps.score_shard(cell, s, prepared) for s in plan_shards(prepared.num_examples, 2)]
    result = steps.finalize_cell(cell, outputs, prepared)
    assert result.status == "completed" and 0 <= result.metrics["auroc"] <= 1
    frame = pd.read_parquet(f"{cell.dir}/predictions.parquet")
    assert len(frame) == 24 and frame["bases"].str.len().eq(8).all()
    again = [steps.score_shard(cell, s, prepared) for s in plan_shards(prepared.num_examples, 2)]
    assert steps.finalize_cell(cell, again, prepared).status == "cached"

    # editing the family's settings in the YAML re-scores the task; the same YAML does not
    [same] = build_cells(_config(tmp_path, data, model, _task()))
    [moved] = build_cells(_config(tmp_path, data, model, _task(windows=[[10, 14], [41, 45]])))
    [bumped] = build_cells(_config(tmp_path, data, model, _task(version=2)))
    assert same.key == cell.key and moved.key != cell.key and bumped.key != cell.key


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"window": [[1, 2], [3, 4]]}, "tasks[paired_toy].window"),
        ({"windows": [[40, 44], [10, 14]]}, "tasks[paired_toy].windows"),
        ({"flanking": 5}, "tasks[paired_toy].flanking=5: does nothing for family paired_conservation"),
        ({"min_gap": -1}, "tasks[paired_toy].min_gap=-1"),
    ],
)
def test_the_family_checks_its_own_settings(tmp_path, family, change, message):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump([_task(**change)]))
    with pytest.raises(ValidationError) as e:
        read_task_file(path)
    assert str(e.value).startswith(f"{path}: {message}"), str(e.value)
