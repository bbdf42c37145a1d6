"""Benchmarks as data: task definitions in YAML, and the registry of the tasks a config can use.

A task file is a YAML list of task definitions (`TaskDef`), or a mapping of `tasks:` (that list)
and `defaults:` (fields every task of the file starts from, merged key by key; a task's own
value wins). The PlantCAD2 zero-shot tasks ship as one (`assets/tasks/plantcad2.yaml`); a config
adds its own with `task_files:`, and their tasks are used in `splits:` exactly like the built-in
ones. A definition's content (`identity_fields`, with its `version`) is part of its cells' keys,
shipped or not: editing a task re-scores that task's cells and nothing else. A definition names its family (registered in
`families/registry.py`), which checks that the definition's settings agree. Every problem is one
line naming the file, the task and the field.

Mask positions are 0-based and defined for the task's native `seq_length`; a split of another
length gets the same number of masks, centred (see `sequences.crop_plan` for model crops).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import pydantic
import yaml
from pydantic import BaseModel, ConfigDict, Field

from plantcad_flows.errors import UnknownNameError, ValidationError, _did_you_mean

if TYPE_CHECKING:
    from plantcad_flows.families.base import TaskFamily

BENCHMARK_REPO_ID = "plantcad/PlantCAD2_zero_shot_tasks"
NATIVE_SEQ_LENGTH = 8192


def centred_mask(num_masks: int, seq_length: int = NATIVE_SEQ_LENGTH) -> tuple[int, ...]:
    """The `num_masks` contiguous positions centred in a sequence of `seq_length` bases.

    For 8,192 bp: 1 -> (4095,), 2 -> (4095, 4096), 3 -> (4094, 4095, 4096).
    """
    start = seq_length // 2 - 1 - (num_masks - 1) // 2
    return tuple(range(start, start + num_masks))


def check_mask_positions(field: str, positions: tuple[int, ...], seq_length: int) -> None:
    """Masks must be distinct, in range and centred: equal margins on each side, +/-1."""
    if not positions:
        raise ValidationError(field, list(positions), "at least one mask position is required")
    if sorted(set(positions)) != list(positions):
        raise ValidationError(field, list(positions), "positions must be distinct and ascending")
    if positions[0] < 0 or positions[-1] >= seq_length:
        raise ValidationError(field, list(positions), f"out of range for length {seq_length}")
    left, right = positions[0], seq_length - 1 - positions[-1]
    if abs(left - right) > 1:
        raise ValidationError(
            field,
            list(positions),
            f"not centred in a {seq_length}-bp sequence (margins {left} and {right})",
        )


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DatasetRef(_Strict):
    """Where the task's splits live on the Hugging Face hub: repo, and config (= task by default)."""

    repo: str | None = Field(default=None, description="Dataset repo id; none: splits must give a path")
    config: str | None = Field(default=None, description="Dataset config name; default: the task's name")


STRANDS = ("fwd", "rc")


class LeaderboardEntry(_Strict):
    """Where one split of a task sits on a leaderboard view (`plantcad-flows leaderboard`): the
    leaderboard's task id, its group (group means and the composite are taken over groups), the
    metric reported, and the strands whose better value is selected."""

    task_id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    group: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    metric: str
    strands: tuple[str, ...] = Field(default=STRANDS, description="fwd, rc: the better one is selected")
    board: str = Field(
        default="plantcad2",
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$",
        description="The view it belongs to; a task of your own can join a view of its own",
    )

    @pydantic.field_validator("strands")
    @classmethod
    def _strands(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for strand in v:
            if strand not in STRANDS:
                raise UnknownNameError("strands", strand, STRANDS)
        if not v or len(set(v)) != len(v):
            raise ValidationError("strands", list(v), "fwd and/or rc, each once")
        return v


GENERIC_COLUMNS = {"sequence": "sequence", "label": "label"}


class TaskDef(_Strict):
    """One task: its family, where its data lives, its splits and the family's settings.

    The fields below are every family's. Any other key of a task's YAML is a setting of its
    family (`TaskFamily.settings_model`: masks for the masked families, `flanking` for the
    structural-variant one, ...), kept in `settings` and checked by the family; `columns` takes
    `sequence`, `label` and the column roles the family reads (`TaskFamily.column_roles`)."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    family: str
    description: str = ""
    dataset: DatasetRef = DatasetRef()
    splits: tuple[str, ...] = Field(min_length=1)
    seq_length: int = Field(default=NATIVE_SEQ_LENGTH, gt=0)
    settings: dict[str, Any] = Field(
        default_factory=dict, description="The family's settings (any key not listed here goes there)"
    )
    columns: dict[str, str] = Field(
        default_factory=dict, description="Column names by role: sequence, label and the family's roles"
    )
    strands: tuple[str, ...] | None = Field(
        default=None,
        description="fwd, rc or both: the strands this task's splits are scored on, unless a split "
        "says otherwise; default: the config's `strands`",
    )
    leaderboard: dict[str, LeaderboardEntry] = Field(
        default_factory=dict,
        description="Per split: its leaderboard task id, group and metric (never hashed: it only "
        "decides how results are shown)",
    )
    version: int = Field(
        default=1,
        ge=1,
        description="Bump it to re-score the task's cells when its data or meaning changed "
        "without its other fields changing",
    )
    source: str = Field(default="", description="The file it was read from (never hashed)")

    @pydantic.model_validator(mode="before")
    @classmethod
    def _family_settings(cls, data: object) -> object:
        """Keys that are not every family's go to `settings`, for the family to check."""
        if not isinstance(data, dict):
            return data
        own = set(cls.model_fields)
        extra = {k: v for k, v in data.items() if k not in own}
        if not extra:
            return data
        return {
            **{k: v for k, v in data.items() if k in own},
            "settings": {**data.get("settings", {}), **extra},
        }

    @pydantic.field_validator("family")
    @classmethod
    def _family(cls, v: str) -> str:
        from plantcad_flows.families.registry import FAMILIES

        if v not in FAMILIES:
            raise UnknownNameError("family", v, FAMILIES)
        return v

    @pydantic.field_validator("strands")
    @classmethod
    def _strands(cls, v: tuple[str, ...] | None) -> tuple[str, ...] | None:
        return None if v is None else LeaderboardEntry._strands(v)

    @pydantic.model_validator(mode="after")
    def _settings(self) -> TaskDef:
        if self.seq_length % 2:
            raise ValidationError("seq_length", self.seq_length, "must be even to centre-crop")
        family = self.family_object
        where = f"tasks[{self.name}]"
        check_settings(where, family.name, family.settings_model, self.settings)
        roles = {**GENERIC_COLUMNS, **family.column_roles}
        for role in self.columns:
            if role not in roles:
                raise UnknownNameError(f"{where}.columns.{role}", role, roles)
        family.check_task(where, self)
        for split, entry in self.leaderboard.items():
            where = f"tasks[{self.name}].leaderboard[{split}]"
            if split not in self.splits:
                raise UnknownNameError(where, split, self.splits)
            if entry.metric not in self.family_object.metrics:
                raise UnknownNameError(f"{where}.metric", entry.metric, self.family_object.metrics)
        return self

    @property
    def family_object(self) -> TaskFamily:
        from plantcad_flows.families.registry import get_family

        return get_family(self.family)

    def column(self, role: str) -> str:
        """The column holding `role` (sequence, label or one of the family's roles)."""
        return self.columns.get(role) or {**GENERIC_COLUMNS, **self.family_object.column_roles}[role]

    @property
    def dataset_config(self) -> str:
        return self.dataset.config or self.name

    @property
    def shipped(self) -> bool:
        """The definition is the shipped one of its name (whatever file it was read from)."""
        shipped = builtin_tasks().get(self.name)
        return shipped is not None and shipped.model_dump(exclude={"source"}) == self.model_dump(
            exclude={"source"}
        )

    def identity_fields(self) -> dict:
        """What the definition adds to its cells' keys (shipped or a user's): everything that
        says what is scored and how, in a normal form (a default spelled out or left out gives
        the same fields). Not its name (the split's key has it), description, splits (adding a
        split moves no other split), strands (each strand is a cell of its own), leaderboard
        entries or source file."""
        family = self.family_object
        return {
            "family": self.family,
            "dataset": {"repo": self.dataset.repo, "config": self.dataset_config},
            "seq_length": self.seq_length,
            "settings": family.settings_identity(self),
            "columns": {role: self.column(role) for role in {**GENERIC_COLUMNS, **family.column_roles}},
            "version": self.version,
        }


def check_settings(where: str, family: str, model: type[BaseModel], values: dict) -> None:
    """`values` are valid settings of `model`; else one ValidationError naming the field. A key
    that another family takes "does nothing" for this one; any other is unknown."""
    from plantcad_flows.families.registry import FAMILIES

    for key, value in values.items():
        if key in model.model_fields:
            continue
        if any(
            key in f.settings_model.model_fields or key in f.overrides_model.model_fields
            for f in FAMILIES.values()
        ):
            raise ValidationError(f"{where}.{key}", value, f"does nothing for family {family}")
        raise ValidationError(
            f"{where}.{key}", value, "unknown key", _did_you_mean(str(key), model.model_fields, cutoff=0.6)
        )
    try:
        model.model_validate(values)
    except pydantic.ValidationError as e:
        err = e.errors()[0]
        cause = err.get("ctx", {}).get("error")
        if isinstance(cause, ValidationError):
            raise cause from None
        loc = ".".join(str(x) for x in err["loc"])
        raise ValidationError(f"{where}.{loc}", err.get("input"), err["msg"]) from None


def _one_line(file: str, index: int, raw: object, exc: pydantic.ValidationError) -> ValidationError:
    """A pydantic error on one task definition as our one-line error naming file, task, field."""
    name = raw.get("name", f"#{index}") if isinstance(raw, dict) else f"#{index}"
    err = exc.errors()[0]
    loc = ".".join(str(x) for x in err["loc"])
    where = f"{file}: tasks[{name}]" + (f".{loc}" if loc else "")
    cause = err.get("ctx", {}).get("error")
    if isinstance(cause, ValidationError):  # ours, raised inside a validator: keep its field
        return ValidationError(f"{file}: {_task_field(name, cause.field)}", cause.value, _problem(cause))
    if err["type"] == "extra_forbidden":
        return ValidationError(where, err.get("input"), f"unknown key {loc.rsplit('.', 1)[-1]!r}")
    return ValidationError(where, err.get("input"), err["msg"])


def _task_field(name: str, field: str) -> str:
    return field if field.startswith("tasks[") else f"tasks[{name}].{field}"


def _problem(e: ValidationError) -> str:
    return str(e).split(": ", 1)[1] if ": " in str(e) else str(e)


def read_task_file(path: str | Path) -> list[TaskDef]:
    """The task definitions of one YAML task file (a list, or a mapping with a `tasks:` list).

    Raises:
        ValidationError: one line naming the file, the task and the field.
    """
    file = str(path)
    try:
        data = yaml.safe_load(Path(path).read_text())
    except FileNotFoundError:
        raise ValidationError("task_files[]", file, "no such file") from None
    except yaml.YAMLError as e:
        raise ValidationError("task_files[]", file, f"invalid YAML: {' '.join(str(e).split())}") from None
    defaults: dict = {}
    if isinstance(data, dict) and "tasks" in data and set(data) <= {"tasks", "defaults"}:
        defaults = data.get("defaults") or {}
        if not isinstance(defaults, dict):
            raise ValidationError(f"{file}: defaults", defaults, "a mapping of task fields")
        data = data["tasks"]
    if not isinstance(data, list) or not data:
        raise ValidationError(
            f"{file}: tasks", type(data).__name__, "a task file is a non-empty list of tasks"
        )
    tasks: list[TaskDef] = []
    seen: set[str] = set()
    for i, raw in enumerate(data):
        if not isinstance(raw, dict):
            raise ValidationError(f"{file}: tasks[#{i}]", raw, "each task is a mapping")
        try:
            task = TaskDef.model_validate({**_merged(defaults, raw), "source": file})
        except pydantic.ValidationError as e:
            raise _one_line(file, i, raw, e) from None
        if task.name in seen:
            raise ValidationError(f"{file}: tasks[{task.name}].name", task.name, "defined twice in this file")
        seen.add(task.name)
        tasks.append(task)
    return tasks


def _merged(defaults: dict, raw: dict) -> dict:
    """`raw` over `defaults`, mappings merged key by key (a task's own value wins)."""
    out = dict(defaults)
    for k, v in raw.items():
        out[k] = _merged(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def task_entries(path: str | Path) -> list[dict]:
    """The raw task entries of a task file (defaults applied), without validation: for readers
    that need only a field or two (the registry's family order)."""
    data = yaml.safe_load(Path(path).read_text())
    if isinstance(data, dict):
        return [_merged(data.get("defaults") or {}, t) for t in data.get("tasks") or []]
    return list(data or [])


_BUILTIN: dict[str, TaskDef] | None = None


def builtin_tasks() -> dict[str, TaskDef]:
    """The shipped PlantCAD2 task set, by name, in file order (read once per process)."""
    from plantcad_flows.families.registry import BUILTIN_TASK_FILE

    global _BUILTIN
    if _BUILTIN is None:
        _BUILTIN = {t.name: t for t in read_task_file(BUILTIN_TASK_FILE)}
    return _BUILTIN


def task_registry(task_files: list[str] | tuple[str, ...] = ()) -> dict[str, TaskDef]:
    """The built-in tasks plus those of `task_files`, by name.

    Raises:
        ValidationError: a task file's own problems, or a name defined in two files (naming both).
    """
    tasks = dict(builtin_tasks())
    for path in task_files:
        for task in read_task_file(path):
            if task.name in tasks:
                raise ValidationError(
                    f"{path}: tasks[{task.name}].name",
                    task.name,
                    f"clashes with the task of the same name in {tasks[task.name].source}",
                )
            tasks[task.name] = task
    return tasks


def get_task(name: str, field: str = "task", tasks: dict[str, TaskDef] | None = None) -> TaskDef:
    """Look a task up by name; an unknown name raises with the closest valid one."""
    tasks = builtin_tasks() if tasks is None else tasks
    try:
        return tasks[name]
    except KeyError:
        raise UnknownNameError(field, name, tasks) from None


def all_task_splits() -> list[tuple[str, str]]:
    """Every (task, split) pair of the built-in benchmark, in file order."""
    return [(t.name, s) for t in builtin_tasks().values() for s in t.splits]
