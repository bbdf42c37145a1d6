"""Task families as plugins, and benchmarks as data.

One module per family (`conservation`, `motif`, `core_noncore`, `structural_variant`,
`variant_effect`; the
masked-position ones share `masked`) owns everything family-specific: settings and their checks,
columns and validation, model inputs and scores, metrics, curves, bootstrap inputs and synthetic
data (`base.TaskFamily` says what a family answers). `registry` holds them by name. Tasks are
data: `tasks` reads YAML task files, the shipped PlantCAD2 set and a config's own `task_files:`.

The rest of the house uses only this package's public names (below), `families.tasks` and
`families.measures`; it never imports a family's module and never asks which family a task is.
"""

from plantcad_flows.families.base import NO_LABEL, ModelInputs, Runner, TaskFamily, labels_of, require_columns
from plantcad_flows.families.measures import MetricInputs
from plantcad_flows.families.registry import BUILTIN_TASK_FILE, FAMILIES, get_family
from plantcad_flows.families.tasks import (
    BENCHMARK_REPO_ID,
    NATIVE_SEQ_LENGTH,
    TaskDef,
    all_task_splits,
    builtin_tasks,
    centred_mask,
    check_mask_positions,
    get_task,
    read_task_file,
    task_registry,
)
from plantcad_flows.families.variant_effect import SPLIT as VARIANT_SPLIT
from plantcad_flows.families.variant_effect import VariantSetConfig

__all__ = [
    "BENCHMARK_REPO_ID",
    "BUILTIN_TASK_FILE",
    "FAMILIES",
    "NATIVE_SEQ_LENGTH",
    "NO_LABEL",
    "MetricInputs",
    "ModelInputs",
    "Runner",
    "TaskDef",
    "TaskFamily",
    "VARIANT_SPLIT",
    "VariantSetConfig",
    "all_task_splits",
    "builtin_tasks",
    "centred_mask",
    "check_mask_positions",
    "get_family",
    "get_task",
    "read_task_file",
    "labels_of",
    "require_columns",
    "task_registry",
]
