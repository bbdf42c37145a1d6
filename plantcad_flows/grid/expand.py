"""Expansion of a checked grid spec into cells: every choice made, nothing submitted.

`expand_grid` is the whole plan. For each selected model x dataset it:

1. merges the hyper-parameter maps of the spec root, the dataset and the model, in that order;
   a higher level's name (compared without the hiding `_`) shadows the lower one's, also inside a
   zipped group, whose options are then de-duplicated;
2. takes the product over the remaining axes (a list is one axis, a zipped group is one axis
   whose options set several names), keeps the combinations the `run` filter allows, and names
   each cell (names.py);
3. merges the cell's resources (resources.py) and maps them onto the target pool's job variables;
4. resolves the command for the target (`[local](remote)`) and fills its placeholders, or, for an
   eval cell, fills the eval config's placeholders and parses it.

Every problem is a `ValidationError` raised here, before anything runs: a placeholder with no
value (naming it and the cell), a `run` filter value that matches nothing, a cell with neither
command nor eval, two cells with the same name. Cells are frozen pydantic models, so the grid
flow can pass them as parameters and show them in the UI.
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal

import pydantic
import yaml
from pydantic import BaseModel, ConfigDict

from plantcad_flows.errors import ValidationError
from plantcad_flows.grid.names import cell_name, check_unique, format_value, is_hidden
from plantcad_flows.grid.resources import (
    Resources,
    as_validation_error,
    hparam_layer,
    kubernetes_job_variables,
    merge_resources,
    process_job_variables,
)
from plantcad_flows.grid.spec import GridSpec, PoolType, Scalar, canonical, load_grid

RUN_COMMAND_FLOW = "run-command"
EVAL_FLOW = "zero-shot-eval"
LABEL_GRID, LABEL_CELL = "plantcad.io/grid", "plantcad.io/cell"
_SUGAR = re.compile(r"\[([^\[\]]*)\]\(([^()]*)\)")
_PLACEHOLDER = re.compile(r"<(_?[A-Za-z][A-Za-z0-9_]*)>")

Option = dict[str, Any]
Axis = list[Option]


class GridCell(BaseModel):
    """One cell of a grid, fully resolved for its target."""

    model_config = ConfigDict(frozen=True)

    name: str
    project: str
    model: str
    dataset: str
    hparams: dict[str, Scalar]  # every hyper-parameter, names as written, hidden ones included
    kind: Literal["command", "eval"]
    command: str | None = None  # for kind "command": resolved for the target, placeholders filled
    eval_config: dict[str, Any] | None = None  # for kind "eval": the zero-shot-eval config
    env: dict[str, str]
    resources: Resources
    target: str
    pool: PoolType
    deployment: str  # "{flow}/{target}": run-command or zero-shot-eval
    job_variables: dict[str, Any]
    output_uri: str  # {prefix}/grids/{project}/{name}
    tags: tuple[str, ...]

    @property
    def visible_hparams(self) -> dict[str, Scalar]:
        """The hyper-parameters shown in the name (not starting with `_`)."""
        return {k: v for k, v in self.hparams.items() if not is_hidden(k)}


def _axes(hparam: Mapping[str, Any]) -> list[Axis]:
    axes = []
    for key, value in hparam.items():
        if isinstance(value, list) and isinstance(value[0], Mapping):
            axes.append([dict(option) for option in value])
        elif isinstance(value, list):
            axes.append([{key: v} for v in value])
        else:
            axes.append([{key: value}])
    return axes


def _shadow(axis: Axis, names: set[str]) -> Axis:
    # Only an axis that lost names is de-duplicated: a value listed twice on purpose must still
    # reach the duplicate-name check.
    if not any(canonical(k) in names for k in axis[0]):
        return axis
    kept, seen = [], set()
    for option in axis:
        left = {k: v for k, v in option.items() if canonical(k) not in names}
        fingerprint = json.dumps(left, sort_keys=True, default=str)
        if left and fingerprint not in seen:
            seen.add(fingerprint)
            kept.append(left)
    return kept


def merge_hparams(levels: list[tuple[Mapping[str, Any], str]]) -> tuple[list[Axis], dict[str, str]]:
    """Axes of the product and each name's origin; `levels` lowest first (root, dataset, model)."""
    axes: list[Axis] = []
    origins: dict[str, str] = {}
    for hparam, origin in levels:
        new = _axes(hparam)
        names = {canonical(k) for axis in new for k in axis[0]}
        axes = [kept for kept in (_shadow(a, names) for a in axes) if kept]
        origins = {k: o for k, o in origins.items() if canonical(k) not in names}
        origins.update({k: origin for axis in new for k in axis[0]})
        axes.extend(new)
    return axes, origins


def pick_command(command: str, target: str) -> str:
    """Resolve `[local command](remote command)`: the first part for target `local`."""
    return _SUGAR.sub(lambda m: m.group(1) if target == "local" else m.group(2), command).strip()


def fill_placeholders(text: str, values: Mapping[str, str], field: str, cell: str) -> str:
    """Replace each `<key>` (or `<_key>`) with its value.

    Raises:
        ValidationError: naming the first placeholder with no value and the cell.
    """

    def value(m: re.Match) -> str:
        key = canonical(m.group(1))
        if key not in values:
            known = ", ".join(sorted(values))
            raise ValidationError(
                field, m.group(0), f"placeholder has no value in cell {cell}", f"have: {known}"
            )
        return values[key]

    return _PLACEHOLDER.sub(value, text)


def _eval_config(path: str, text: str, values: Mapping[str, str], field: str, cell: str, output: str) -> dict:
    filled = fill_placeholders(text, values, field, cell)
    try:
        config = yaml.safe_load(filled)
    except yaml.YAMLError as e:
        problem = f"not valid YAML once filled for cell {cell}"
        raise ValidationError(field, path, problem, str(e).splitlines()[0]) from None
    if not isinstance(config, dict):
        raise ValidationError(field, path, "an eval config must be a mapping")
    executor = config.setdefault("executor", {})
    if isinstance(executor, dict):
        executor.setdefault("prefix", output)
    return config


def expand_grid(
    spec: GridSpec,
    *,
    target: str | None = None,
    check_eval: Callable[[dict[str, Any]], Mapping[str, Any]] | None = None,
) -> list[GridCell]:
    """Every cell of the grid, in order model x dataset x hyper-parameter product.

    Args:
        spec: a checked spec (`load_grid`).
        target: run for this target instead of `spec.target` (e.g. "local" for `--local`).
        check_eval: validates an eval cell's config and returns it normalised (the shell passes
            the zero-shot-eval flow's config model); its errors are reported with the cell.

    Raises:
        ValidationError: one line naming the field and the value (see the module docstring).
    """
    planner = _Planner(spec, target or spec.target, check_eval)
    cells = [
        cell
        for m_name in spec.run.models or list(spec.models)
        for d_name in spec.run.datasets or list(spec.datasets)
        for cell in planner.pair(m_name, d_name)
    ]
    for key, ok in planner.allowed.items():
        missing = sorted(ok - planner.matched[key])
        if missing:
            raise ValidationError(f"run.hparam.{key}", missing[0], "matches no cell", "check its spelling")
    if not cells:
        raise ValidationError("run", spec.run.model_dump(exclude_defaults=True), "selects no cells")
    check_unique(cells)
    return cells


class _Planner:
    """The state one expansion shares across model x dataset pairs."""

    def __init__(self, spec: GridSpec, target: str, check_eval: Callable | None):
        self.spec, self.target, self.check_eval = spec, target, check_eval
        self.pool = spec.pool_for(target)
        self.to_job_variables = (
            kubernetes_job_variables if self.pool == "kubernetes" else process_job_variables
        )
        self.allowed = {canonical(k): {format_value(v) for v in vs} for k, vs in spec.run.hparam.items()}
        self.matched: dict[str, set[str]] = {k: set() for k in self.allowed}
        self.eval_texts: dict[str, str] = {}

    def _selected(self, texts: Mapping[str, str]) -> bool:
        if any(k in texts and texts[k] not in ok for k, ok in self.allowed.items()):
            return False
        for k in self.allowed:
            if k in texts:
                self.matched[k].add(texts[k])
        return True

    def pair(self, m_name: str, d_name: str) -> list[GridCell]:
        """The cells of one model x dataset."""
        spec = self.spec
        model, dataset = spec.models[m_name], spec.datasets[d_name]
        if model.command is not None or model.eval is not None:
            job, job_field = model, f"models.{m_name}"
        elif dataset.command is not None or dataset.eval is not None:
            job, job_field = dataset, f"datasets.{d_name}"
        else:
            hint = "set command or eval on the model or the dataset entry"
            raise ValidationError(
                f"models.{m_name}", None, f"no command or eval for dataset {d_name!r}", hint
            )
        axes, origins = merge_hparams(
            [
                (spec.hparam, "hparam"),
                (dataset.hparam, f"datasets.{d_name}.hparam"),
                (model.hparam, f"models.{m_name}.hparam"),
            ]
        )
        layers = (spec.resources, dataset, model)
        pair_resources = merge_resources(*layers)
        cells = []
        for combo in itertools.product(*axes):
            hparams: dict[str, Any] = {}
            for option in combo:
                hparams.update(option)
            texts = {canonical(k): format_value(v) for k, v in hparams.items()}
            if not self._selected(texts):
                continue
            name = cell_name(spec.project, m_name, d_name, hparams)
            layer = hparam_layer(hparams, origins, name)
            resources = merge_resources(*layers, layer) if layer.model_fields_set else pair_resources
            output = f"{spec.prefix}/grids/{spec.project}/{name}"
            values = {"project": spec.project, "model": m_name, "dataset": d_name, "cell": name, **texts}
            command = eval_config = None
            if job.command is not None:
                command = pick_command(job.command, self.target)
                command = fill_placeholders(command, values, f"{job_field}.command", name)
            else:
                text = self.eval_texts.setdefault(job.eval, Path(job.eval).read_text())
                eval_config = _eval_config(job.eval, text, values, f"{job_field}.eval", name, output)
                if self.check_eval is not None:
                    eval_config = _checked(self.check_eval, eval_config, f"{job_field}.eval", name)
            flow = RUN_COMMAND_FLOW if command is not None else EVAL_FLOW
            labels = {LABEL_GRID: spec.project, LABEL_CELL: name}
            cells.append(
                GridCell.model_construct(  # every field is already checked; skips re-validation
                    name=name,
                    project=spec.project,
                    model=m_name,
                    dataset=d_name,
                    hparams=hparams,
                    kind="command" if command is not None else "eval",
                    command=command,
                    eval_config=eval_config,
                    env=dict(resources.env),
                    resources=resources,
                    target=self.target,
                    pool=self.pool,
                    deployment=f"{flow}/{self.target}",
                    job_variables={**self.to_job_variables(resources), "name": name, "labels": labels},
                    output_uri=output,
                    tags=(f"grid:{spec.project}", f"cell:{name}"),
                )
            )
        return cells


def _checked(check: Callable[[dict], Mapping[str, Any]], config: dict, field: str, cell: str) -> dict:
    try:
        return dict(check(config))
    except pydantic.ValidationError as e:
        inner = as_validation_error(e)
    except ValidationError as e:
        inner = e
    raise ValidationError(field, cell, f"eval config invalid: {inner}")


def plan_grid(path: str | Path, *, target: str | None = None, **kwargs: Any) -> list[GridCell]:
    """`load_grid` then `expand_grid`: the cells of a grid.yaml, checked, nothing submitted."""
    return expand_grid(load_grid(path), target=target, **kwargs)
