"""What a task family is: one object that owns everything family-specific about a task.

The pipeline never asks "which kind of task is this?"; it asks the task's family (as
lm-evaluation-harness asks a task for its metrics and Inspect builds a task from dataset, solver
and scorer). A family says:

* which settings it takes (`settings_model` in a task definition, `overrides_model` in a split
  entry, `column_roles`) and how they must agree (`check_task`, `check_split`, `check_model`);
* which columns it reads and how the sampled rows become the frame scoring consumes (`frame`);
* how a model's inputs are built and its outputs become a score (`score`): the family describes
  each pass over the model as `ModelInputs` and calls the `Runner` the scoring room gives it, so
  families stay free of torch;
* its metrics, main metric, bootstrap inputs and curves (`metrics_of`, `metric_inputs`, `curves`);
* its synthetic data for the demo and tests (`synthetic`);
* the bodies of its pipeline steps (`steps`): prepare a split, turn a shard's rows into the frame
  that is scored, finish a cell. Most families take the generic ones (`plantcad_flows.steps:Steps`);
  a family whose data is not a table of sequences (variant sets: a VCF and a FASTA) names its
  own. A family sits below the rooms that read files and run models, so it names its step
  bodies by module (as a plugin entry point would) rather than importing them;
* what it adds to the keys of its steps (`split_key_fields`, `cell_key_fields`) and the files
  whose content is its data's identity (`content_files`).

Families are registered by name in `families/registry.py`; a task definition (`tasks.TaskDef`)
names its family.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict

from plantcad_flows.errors import ValidationError
from plantcad_flows.families.measures import MetricInputs
from plantcad_flows.sequences import CropPlan, check_alphabet, to_bytes

if TYPE_CHECKING:
    from plantcad_flows.families.tasks import TaskDef

NO_LABEL = -1  # a family that needs no label (motif recovery) fills an absent column with this
# Before families owned their settings every cell key held a `flanking` (the structural-variant
# default, 5) and the mask positions; the benchmark families keep adding both, so that their keys
# moved only by what the issue moved (the task definition)
KEY_FLANKING = 5


@dataclass(frozen=True)
class ModelInputs:
    """One model input per example, and where to read probabilities from it.

    `gather`, `valid` and `base_positions` are (n, P) arrays or (1, P) arrays broadcast to every
    row. `gather` indexes the model's output positions (after crop and reverse complement);
    `valid` is False where nothing can be read (a position outside the input, or a CLM position
    with no preceding token), which yields NaN probabilities. `base_positions` are positions in
    the uncropped forward sequence whose byte is the true base reported (`N` if out of range).
    """

    sequences: Sequence[str]
    plan: CropPlan
    reverse: bool
    mask_positions: np.ndarray | None  # positions (input coordinates) that get the mask token
    gather: np.ndarray
    valid: np.ndarray
    base_positions: np.ndarray
    # "probs": the 4 nucleotide probabilities at `gather`; "loglik": each input's log-likelihood
    # as a causal LM reads it, sum over i >= 1 of log p(token i | tokens < i) over the full
    # vocabulary (the runner then returns it as an (n,) float64 array in place of the probs)
    readout: str = "probs"

    def rows(self, arr: np.ndarray, lo: int, hi: int) -> np.ndarray:
        return arr[lo:hi] if arr.shape[0] != 1 else np.broadcast_to(arr, (hi - lo, arr.shape[1]))


# One pass of the model over `ModelInputs` -> probs (n, P, 4) float32 and true bases (n, P) uint8.
Runner = Callable[[ModelInputs], tuple[np.ndarray, np.ndarray]]


class ModelLike(Protocol):
    """What a family reads of a model's config (`config.ModelConfig`)."""

    label: str
    type: str
    context_length: int
    motif_inference_mode: str


class SplitLike(Protocol):
    """What a family reads of a split's config (`config.SplitConfig`)."""

    task: str
    split: str
    key: str
    seq_column: str
    label_column: str
    seq_length: int
    definition: TaskDef
    overrides: dict[str, Any]  # the family's split-level settings (`overrides_model`)

    @property
    def mask_positions(self) -> tuple[int, ...]: ...


class FamilySettings(BaseModel):
    """The base of a family's settings (in a task definition) and overrides (in a split entry):
    strict, so an unknown key is an error naming it."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class TaskFamily:
    """The base of every family. Subclasses set the class attributes and override what differs."""

    name: ClassVar[str]
    description: ClassVar[str] = ""
    metrics: ClassVar[tuple[str, ...]]  # the metrics reported, the main one first
    curves: ClassVar[tuple[str, ...]] = ()  # "roc", "pr": the curves drawn per cell
    short_affixes: ClassVar[tuple[str, str]] = ("", "")  # stripped from task names in the pivot
    label_required: ClassVar[bool] = True
    binary_labels: ClassVar[bool] = True
    # "module:Class" of the bodies of this family's steps (see the module docstring)
    steps: ClassVar[str] = "plantcad_flows.steps:Steps"
    # a split is checked by preparing it in the preflight (before any GPU), not by reading it
    prepare_in_preflight: ClassVar[bool] = False
    # the settings a task definition of this family adds (YAML keys beside the generic ones) and
    # those a split entry may override (`overrides:`); both are the family's, checked by it
    settings_model: ClassVar[type[FamilySettings]] = FamilySettings
    overrides_model: ClassVar[type[FamilySettings]] = FamilySettings
    # column roles the family reads beyond sequence and label, with their default names
    column_roles: ClassVar[dict[str, str]] = {}

    @property
    def main_metric(self) -> str:
        """The metric the pivot, trends, leaderboard and regression alerts lead with, when the
        family has one for all its tasks (`main_metric_of` says it for one cell)."""
        return self.metrics[0]

    def main_metric_of(self, metrics: Iterable[str]) -> str:
        """The main metric of a cell that reports `metrics` (names). A family whose tasks
        report different metrics (a variant set with a label, or with a target only) overrides
        this; by default it is the family's."""
        return self.main_metric

    def short_name(self, task: str) -> str:
        prefix, suffix = self.short_affixes
        return task.removeprefix(prefix).removesuffix(suffix)

    # --- settings -------------------------------------------------------------------------
    def settings_of(self, task: TaskDef) -> FamilySettings:
        """The task definition's settings as this family's model."""
        return self.settings_model.model_validate(task.settings)

    def overrides_of(self, split: SplitLike) -> FamilySettings:
        """The split entry's overrides as this family's model."""
        return self.overrides_model.model_validate(split.overrides)

    def settings_text(self, task: TaskDef) -> str:
        """The settings in a word or two, for `plantcad-flows tasks`."""
        return ""

    def settings_identity(self, task: TaskDef) -> dict[str, Any]:
        """The settings as they enter the task's keys, in a normal form (a default spelled out or
        left out gives the same fields); by default the validated model's fields."""
        return self.settings_of(task).model_dump(mode="json")

    def check_task(self, where: str, task: TaskDef) -> None:
        """A task definition's settings agree with each other. Raises ValidationError naming
        `{where}.{field}`."""

    def check_split(self, split: SplitLike) -> None:
        """A split's settings (its overrides) agree with its task and its sequence length."""

    def mask_positions(self, split: SplitLike) -> tuple[int, ...]:
        """The masked positions in the uncropped sequence (0-based); () when none are read."""
        return ()

    def unsupported_reason(self, model_type: str) -> str | None:
        """Why a model of this type cannot be scored on this family's tasks, else None."""
        return None

    def strand_unsupported_reason(self, model_type: str, strand: str) -> str | None:
        """Why a model of this type cannot be scored on `strand` (fwd or rc) of this family's
        tasks, else None. Only the forward strand by default."""
        if strand == "fwd":
            return None
        return f"{self.name} is scored on the forward strand only"

    def check_model(self, where: str, model: ModelLike, split: SplitLike) -> None:
        """A model's settings (its context length) can score `split`. Raises ValidationError."""

    # --- identity -------------------------------------------------------------------------
    def content_files(self, split: SplitLike) -> dict[str, str]:
        """field -> location of the files whose content is the split's identity, when it is not
        its parquet data (`path`) or dataset repo; empty by default."""
        return {}

    def split_key_fields(self, split: SplitLike) -> dict[str, object]:
        """Fields this family adds to (or replaces in) the prepared split's key; none by default."""
        return {}

    def cell_key_fields(self, split: SplitLike) -> dict[str, object]:
        """Fields this family adds to a cell's key beyond the split's; none by default (so the
        keys of the families that add none stay where they were)."""
        return {}

    # --- data -----------------------------------------------------------------------------
    def sequence_columns(self, split: SplitLike) -> tuple[str, ...]:
        """The columns holding `split.seq_length`-bp sequences."""
        raise NotImplementedError

    def other_columns(self, split: SplitLike) -> tuple[str, ...]:
        """Further columns the family reads (beyond the label)."""
        return ()

    def frame(self, rows: pd.DataFrame, keep: np.ndarray, split: SplitLike) -> pd.DataFrame:
        """The frame scoring consumes from the sampled raw rows (`keep` their row indices):
        row_index, label and the family's sequence columns. Raises ValidationError."""
        raise NotImplementedError

    # --- scoring --------------------------------------------------------------------------
    def score(
        self, model: ModelLike, split: SplitLike, frame: pd.DataFrame, run: Runner, strand: str = "fwd"
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(probs (n, P, 4), bases (n, P), score (n,)) of every example of `frame`, on `strand`
        (one the family supports, `strand_unsupported_reason`)."""
        raise NotImplementedError

    # --- metrics --------------------------------------------------------------------------
    def metrics_of(self, predictions: pd.DataFrame, notes: list[str] | None = None) -> dict[str, float | int]:
        """The protocol's metrics for one cell from its predictions frame."""
        raise NotImplementedError

    def metric_inputs(self, predictions: pd.DataFrame) -> MetricInputs:
        """The per-example arrays the bootstrap resamples."""
        raise NotImplementedError

    # --- synthetic data -------------------------------------------------------------------
    def synthetic(
        self, rng: np.random.Generator, task: TaskDef, split: str, n: int, length: int
    ) -> pd.DataFrame:
        """`n` synthetic examples of one task split in the public schema."""
        raise ValidationError("synthetic.task", task.name, f"family {self.name} has no synthetic data")


# --- helpers the families share ---------------------------------------------------------------


def require_columns(raw_columns: Sequence[str], columns: Sequence[str], split: SplitLike, field: str) -> None:
    """Every one of `columns` is in the split; raises ValidationError naming `field`."""
    for col in columns:
        if col not in raw_columns:
            raise ValidationError(
                field, col, f"column missing from {split.key} (columns: {', '.join(map(str, raw_columns))})"
            )


def labels_of(rows: pd.DataFrame, split: SplitLike, binary: bool) -> np.ndarray:
    """The label column as int64 (NO_LABEL where absent); with `binary`, only 0 and 1 pass."""
    if split.label_column not in rows.columns:
        return np.full(len(rows), NO_LABEL, dtype=np.int64)
    labels = pd.to_numeric(rows[split.label_column], errors="coerce").to_numpy()
    if binary and not np.isin(labels, (0, 1)).all():
        bad = labels[~np.isin(labels, (0, 1))][0].item()
        raise ValidationError(
            f"splits[{split.key}].label_column", split.label_column, f"labels must be 0 or 1, found {bad!r}"
        )
    return np.nan_to_num(labels, nan=NO_LABEL).astype(np.int64)


def checked_sequences(rows: pd.DataFrame, column: str, split: SplitLike, keep: np.ndarray) -> np.ndarray:
    """The column's sequences as strings, after the A/C/G/T/N alphabet check."""
    seqs = rows[column].astype(str).tolist()
    field = f"splits[{split.key}].{column}"
    check_alphabet(to_bytes(seqs, field=field), field=field, row_index=keep)
    return np.asarray(seqs, dtype=object)
