"""The PlantCAD2 zero-shot benchmark: its 12 tasks, their families, splits and default masks.

Mask positions are 0-based and defined for the benchmark's native 8,192-bp sequences; they are
shifted when sequences are centre-cropped to a model's context (see `sequences.crop_plan`).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from plantcad_flows.errors import UnknownNameError

BENCHMARK_REPO_ID = "plantcad/PlantCAD2_zero_shot_tasks"
NATIVE_SEQ_LENGTH = 8192
DEFAULT_SV_FLANKING = 5


class Family(str, Enum):
    CONSERVATION = "evolutionary_conservation"
    MOTIF = "motif_recovery"
    CORE_NONCORE = "core_noncore_classification"
    STRUCTURAL_VARIANT = "structural_variant_effect"


def centred_mask(num_masks: int, seq_length: int = NATIVE_SEQ_LENGTH) -> tuple[int, ...]:
    """The `num_masks` contiguous positions centred in a sequence of `seq_length` bases.

    For 8,192 bp: 1 -> (4095,), 2 -> (4095, 4096), 3 -> (4094, 4095, 4096).
    """
    start = seq_length // 2 - 1 - (num_masks - 1) // 2
    return tuple(range(start, start + num_masks))


@dataclass(frozen=True)
class TaskSpec:
    name: str
    family: Family
    splits: tuple[str, ...]
    num_masks: int  # 0 for the structural-variant task, which masks nothing

    @property
    def mask_positions(self) -> tuple[int, ...]:
        """Default masked positions for native 8,192-bp sequences."""
        return centred_mask(self.num_masks) if self.num_masks else ()

    @property
    def metrics(self) -> tuple[str, ...]:
        """The metrics reported for this task, the family's main metric first."""
        return FAMILY_METRICS[self.family]


# Per family, the metrics the protocol reports; the first is the one tables and trends lead with.
# The structural-variant task reports AUPRC only, as the published evaluation does.
FAMILY_METRICS: dict[Family, tuple[str, ...]] = {
    Family.CONSERVATION: ("auroc", "auprc"),
    Family.MOTIF: ("motif_accuracy", "token_accuracy"),
    Family.CORE_NONCORE: ("auroc", "auprc"),
    Family.STRUCTURAL_VARIANT: ("auprc",),
}

_PLANT_SPLITS = ("test_maize", "test_tomato")

TASKS: dict[str, TaskSpec] = {
    t.name: t
    for t in (
        TaskSpec("conservation_within_andropogoneae", Family.CONSERVATION, ("test",), 1),
        TaskSpec("conservation_within_poaceae_non_tis", Family.CONSERVATION, ("test",), 1),
        TaskSpec("conservation_within_poaceae_tis", Family.CONSERVATION, ("test",), 1),
        TaskSpec("acceptor_recovery", Family.MOTIF, _PLANT_SPLITS, 2),
        TaskSpec("donor_recovery", Family.MOTIF, _PLANT_SPLITS, 2),
        TaskSpec("tis_recovery", Family.MOTIF, _PLANT_SPLITS, 3),
        TaskSpec("tts_recovery", Family.MOTIF, _PLANT_SPLITS, 3),
        TaskSpec("acceptor_core_noncore_classification", Family.CORE_NONCORE, _PLANT_SPLITS, 2),
        TaskSpec("donor_core_noncore_classification", Family.CORE_NONCORE, _PLANT_SPLITS, 2),
        TaskSpec("tis_core_noncore_classification", Family.CORE_NONCORE, _PLANT_SPLITS, 3),
        TaskSpec("tts_core_noncore_classification", Family.CORE_NONCORE, _PLANT_SPLITS, 3),
        TaskSpec("structural_variant_effect_prediction", Family.STRUCTURAL_VARIANT, ("test",), 0),
    )
}


def get_task(name: str, field: str = "task") -> TaskSpec:
    """Look a task up by name; an unknown name raises with the closest valid one."""
    try:
        return TASKS[name]
    except KeyError:
        raise UnknownNameError(field, name, TASKS) from None


def all_task_splits() -> list[tuple[str, str]]:
    """Every (task, split) pair of the benchmark, in registry order."""
    return [(t.name, s) for t in TASKS.values() for s in t.splits]
