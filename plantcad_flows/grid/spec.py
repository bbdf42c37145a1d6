"""The `grid.yaml` spec: what to run (models x datasets x hyper-parameters), where, with what.

    project: plantcad-ft          # lower case, digits, -: first part of every cell name
    prefix: s3://bucket/runs      # a cell's outputs go to {prefix}/grids/{project}/{cell}/
    target: kubernetes            # local, kubernetes, lambda, or any deployment name
    pool: kubernetes              # only for another target: its pool type, kubernetes or process
    max_running: 8                # at most this many cells at once (optional)
    resources: {memory: 32Gi}     # the root layer of the resource chain (see resources.py)
    hparam: {seed: 0}             # shared by every cell; datasets, then models, override it
    models:
      big:
        command: python train.py --data <data> --lr <lr> --seed <seed>
        hparam: {lr: [1.0e-4, 3.0e-4]}
        gpu_count: 2              # resource fields sit inline in an entry
      small: {command: "[python train.py --cpu <lr>](python train.py <lr>)", hparam: {lr: 1.0e-3}}
    datasets:
      maize: {hparam: {_data: data/maize.parquet}}
    run: {models: [big], datasets: [maize], hparam: {lr: [1.0e-4]}}   # optional filter

An entry (model or dataset) has either a `command` or an `eval`:
- `command`: a shell command; `<key>` is replaced by hyper-parameter `key` (or `_key`), and by the
  built-ins `<project>`, `<model>`, `<dataset>` and `<cell>` unless a hyper-parameter shadows them.
  Values are inserted as written, unquoted. `[local command](remote command)` picks the first part
  when the target is `local` and the second otherwise (neither part may contain brackets).
- `eval`: a zero-shot-eval config YAML (path relative to the grid file), whose text may hold the
  same `<key>` placeholders. The cell is then a zero-shot-eval run of that config; its
  `executor.prefix` defaults to the cell's output directory.
A cell takes the model's `command`/`eval` when it has one, else the dataset's.

Hyper-parameter values: a scalar; a list (the cells take the product over lists); or a list of
mappings with the same keys, a zipped group whose keys vary together (the group's own key only
labels it). A mapping that is not in a list, a null, or a list inside a list is an error.

Everything is checked when loaded: an unknown key anywhere is an error naming it, and every
problem is one `ValidationError` line naming the field and the value (see errors.py).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import pydantic
import yaml
from pydantic import BeforeValidator, Field, ValidationInfo, field_validator, model_validator

from plantcad_flows.errors import UnknownNameError, ValidationError
from plantcad_flows.grid.resources import FieldProblem, ResourceLayer, StrictModel, as_validation_error

Scalar = str | int | float | bool
KNOWN_TARGETS = {"local": "process", "lambda": "process", "kubernetes": "kubernetes"}
PoolType = Literal["kubernetes", "process"]

_HPARAM_NAME = re.compile(r"^_?[A-Za-z][A-Za-z0-9_]*$")
_ENTRY_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_PROJECT = re.compile(r"^[a-z](?:[a-z0-9-]{0,38}[a-z0-9])?$")
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")


def canonical(name: str) -> str:
    """The name placeholders, filters and precedence use: without the hiding `_`."""
    return name[1:] if name.startswith("_") else name


def _check_name(name: Any) -> None:
    if not isinstance(name, str) or not _HPARAM_NAME.match(name):
        raise FieldProblem(name, "not a valid hyper-parameter name", "letters, digits, _; may start with _")


def _check_scalar(value: Any, key: str) -> None:
    if value is None:
        raise FieldProblem(value, "has no value", 'write "" for an empty string', key=key)
    if not isinstance(value, Scalar):
        raise FieldProblem(value, "must be a string, a number or a boolean", key=key)


def _check_hparams(v: Any) -> dict[str, Any]:
    if v is None:
        return {}
    if not isinstance(v, Mapping):
        raise FieldProblem(v, "must be a mapping of name: value, list or zipped group")
    seen: dict[str, str] = {}
    for key, value in v.items():
        _check_name(key)
        names = [key]
        if isinstance(value, list):
            if not value:
                raise FieldProblem(value, "an empty list expands to no cells", key=key)
            if any(isinstance(x, Mapping) for x in value):
                names = _check_group(key, value)
            else:
                for x in value:
                    if isinstance(x, list):
                        raise FieldProblem(
                            x, "a list inside a list is not a value", "quote it as a string", key
                        )
                    _check_scalar(x, key)
        elif isinstance(value, Mapping):
            raise FieldProblem(value, "a mapping is not a value", "a zipped group is a list of mappings", key)
        else:
            _check_scalar(value, key)
        for name in names:
            if canonical(name) in seen:
                other = seen[canonical(name)]
                raise FieldProblem(name, f"set twice in one hparam map (also by {other!r})", key=key)
            seen[canonical(name)] = key
    return dict(v)


def _check_group(key: str, group: list) -> list[str]:
    if not all(isinstance(x, Mapping) and x for x in group):
        raise FieldProblem(group, "a zipped group must be a list of non-empty mappings", key=key)
    keys = list(group[0])
    for i, entry in enumerate(group):
        if set(entry) != set(keys):
            raise FieldProblem(
                group,
                "zipped group entries have different keys",
                f"entry 0 has {', '.join(map(str, keys))}; entry {i} has {', '.join(map(str, entry))}",
                key=key,
            )
        for name, value in entry.items():
            _check_name(name)
            _check_scalar(value, f"{key}[{i}].{name}")
    return keys


def declared_names(hparam: Mapping[str, Any]) -> list[str]:
    """Hyper-parameter names a (checked) hparam map defines, zipped groups' keys included."""
    names = []
    for key, value in hparam.items():
        if isinstance(value, list) and value and isinstance(value[0], Mapping):
            names.extend(value[0])
        else:
            names.append(key)
    return names


Hparams = Annotated[dict[str, Any], BeforeValidator(_check_hparams)]


class Entry(ResourceLayer):
    """A model or dataset: what a cell runs, its hyper-parameters, its resource fields inline."""

    command: str | None = Field(default=None, description="shell command with <key> placeholders")
    eval: str | None = Field(default=None, description="zero-shot-eval config YAML instead of a command")
    hparam: Hparams = {}

    @field_validator("eval")
    @classmethod
    def _eval_file(cls, v: str | None, info: ValidationInfo) -> str | None:
        if v is None:
            return v
        base = Path((info.context or {}).get("base_dir", "."))
        path = Path(v) if Path(v).is_absolute() else base / v
        if not path.is_file():
            raise FieldProblem(v, "no such file", f"looked at {path}")
        return str(path)

    @model_validator(mode="after")
    def _one_job(self) -> Entry:
        if self.command is not None and self.eval is not None:
            raise FieldProblem(self.eval, "an entry has a command or an eval, not both", key="eval")
        return self


def _scalars(v: Any) -> Any:
    return {k: (x if isinstance(x, list) else [x]) for k, x in v.items()} if isinstance(v, Mapping) else v


class RunFilter(StrictModel):
    """Which cells of the grid to run; an omitted part keeps everything."""

    models: list[str] | None = None
    datasets: list[str] | None = None
    hparam: Annotated[dict[str, list[Scalar]], BeforeValidator(_scalars)] = {}


def _project(v: Any) -> str:
    if not isinstance(v, str) or not _PROJECT.match(v):
        raise FieldProblem(v, "not a valid project name", "lower case letters, digits and -, at most 40")
    return v


def _prefix(v: Any) -> str:
    if not isinstance(v, str) or not v.strip():
        raise FieldProblem(v, "must be a local directory, s3://bucket/path or hf://...")
    scheme = _SCHEME.match(v)
    if scheme and scheme.group(1) not in ("s3", "hf", "file"):
        raise FieldProblem(
            v, f"unsupported scheme {scheme.group(1)}://", "use a local directory, s3:// or hf://"
        )
    return v.rstrip("/") or "/"


def _entry_names(v: Any) -> Any:
    if isinstance(v, Mapping):
        for name in v:
            if not isinstance(name, str) or not _ENTRY_NAME.match(name):
                raise FieldProblem(name, "not a valid entry name", "letters, digits, _ . -", key=str(name))
    return {k: ({} if e is None else e) for k, e in v.items()} if isinstance(v, Mapping) else v


Entries = Annotated[dict[str, Entry], BeforeValidator(_entry_names), Field(min_length=1)]


class GridSpec(StrictModel):
    """A whole grid.yaml, checked (see the module docstring for the format)."""

    project: Annotated[str, BeforeValidator(_project)]
    prefix: Annotated[str, BeforeValidator(_prefix)]
    target: str = Field(default="local", min_length=1)
    pool: PoolType | None = None
    max_running: int | None = Field(default=None, ge=1)
    resources: ResourceLayer = ResourceLayer()
    hparam: Hparams = {}
    models: Entries
    datasets: Entries
    run: RunFilter = RunFilter()

    @model_validator(mode="after")
    def _consistent(self) -> GridSpec:
        for field, names, valid in (
            ("run.models", self.run.models, self.models),
            ("run.datasets", self.run.datasets, self.datasets),
        ):
            for name in names or []:
                if name not in valid:
                    raise UnknownNameError(field, name, valid)
        declared = {canonical(n) for n in declared_names(self.hparam)}
        for entry in (*self.models.values(), *self.datasets.values()):
            declared.update(canonical(n) for n in declared_names(entry.hparam))
        for key in self.run.hparam:
            if canonical(key) not in declared:
                raise UnknownNameError("run.hparam", key, declared)
        known = KNOWN_TARGETS.get(self.target)
        if known and self.pool and self.pool != known:
            raise ValidationError("pool", self.pool, f"target {self.target!r} runs on a {known} pool")
        return self

    def pool_for(self, target: str) -> PoolType:
        """The pool type a target runs on: known for local, lambda and kubernetes, else `pool`."""
        pool = KNOWN_TARGETS.get(target) or self.pool
        if pool is None:
            raise ValidationError(
                "pool", None, f"unknown for target {target!r}", "set pool: kubernetes or process"
            )
        return pool  # type: ignore[return-value]


class _UniqueKeyLoader(yaml.SafeLoader):
    """A duplicated key (two models with one name) is an error, not a silent overwrite."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep)


_UniqueKeyLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _UniqueKeyLoader.construct_mapping
)


def parse_grid(data: Any, base_dir: str | Path = ".") -> GridSpec:
    """Check a grid spec already read into Python; `eval` paths are relative to `base_dir`.

    Raises:
        ValidationError: one line naming the field and the value.
    """
    if not isinstance(data, Mapping):
        raise ValidationError("grid", type(data).__name__, "the top level must be a mapping")
    try:
        return GridSpec.model_validate(data, context={"base_dir": str(base_dir)})
    except pydantic.ValidationError as e:
        raise as_validation_error(e) from None


def load_grid(path: str | Path) -> GridSpec:
    """Read and check a grid.yaml.

    Raises:
        ValidationError: a missing file, a YAML syntax error (naming the file and line) or a bad
            field (naming the field and the value).
    """
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ValidationError("grid", str(path), "no such file") from None
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 (a SafeLoader subclass)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        raise ValidationError(where, (e.problem or "").strip(), "not valid YAML", e.context) from None
    return parse_grid(data, base_dir=path.parent)
