"""Named exceptions for bad input.

Every message names the offending field and value on one line, so a user reading a failed flow
run or a CLI error knows what to change. These are raised before any model is loaded; Prefect
tasks never retry them (see `tasks/policy.py`).

`problems` turns pydantic's errors into these, so every bad-input message in the house has the
one shape `field=value: reason (hint)`.
"""

from __future__ import annotations

import difflib
import typing
from collections.abc import Iterable
from typing import Any


class PlantCADError(Exception):
    """Base class for every error this project raises on purpose."""


class ValidationError(PlantCADError, ValueError):
    """Bad input: a config field, a data column, a sequence. Never retried."""

    def __init__(self, field: str, value: object, problem: str, hint: str | None = None):
        self.field, self.value, self.problem, self.hint = field, value, problem, hint
        msg = f"{field}={value!r}: {problem}"
        if hint:
            msg += f" ({hint})"
        super().__init__(msg)


class FieldProblem(ValueError):
    """A problem found inside a pydantic validator, relative to the location being validated.

    `problems` joins `key` to pydantic's location, so the final message names the full field
    (`models.big.memory`) and the offending value.
    """

    def __init__(self, value: object, problem: str, hint: str | None = None, key: str | None = None):
        self.value, self.problem, self.hint, self.key = value, problem, hint, key
        super().__init__(problem)


def field_path(parts: Iterable[object]) -> str:
    """`("models", 0, "type")` -> `models[0].type`."""
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out


def _union_member(part: object) -> bool:
    """A pydantic `loc` entry naming a union member (`int`, `literal['auto']`, `function-after[...]`)."""
    return isinstance(part, str) and (part in ("int", "float", "str", "bool", "none") or "[" in part)


def _short(value: object) -> object:
    text = repr(value)
    return value if len(text) <= 80 else text[:77] + "..."


def problems(exc: Any, prefix: str = "") -> list[tuple[str, ValidationError]]:
    """Each problem of a `pydantic.ValidationError`, as (where, one-line `ValidationError`).

    `where` is pydantic's location as a field path (under `prefix`). A `ValidationError` or
    `FieldProblem` raised inside a validator is kept with its own field and value; any other
    problem names `where` and the rejected input.
    """
    out: list[tuple[str, ValidationError]] = []
    for err in exc.errors():
        parts = ([prefix] if prefix else []) + [p for p in err["loc"] if not _union_member(p)]
        where = field_path(parts) or "config"
        original = (err.get("ctx") or {}).get("error")
        if isinstance(original, ValidationError):
            out.append((where, original))
        elif isinstance(original, FieldProblem):
            field = field_path([*parts, original.key]) if original.key else where
            out.append((where, ValidationError(field, original.value, original.problem, original.hint)))
        elif err["type"] == "extra_forbidden":
            valid = _known_keys(_model_named(getattr(exc, "title", "")), err["loc"][:-1])
            hint = _did_you_mean(str(err["loc"][-1]), valid, cutoff=0.6) if valid else None
            out.append((where, ValidationError(where, _short(err.get("input")), "unknown key", hint)))
        else:
            reason = err["msg"].removeprefix("Value error, ")
            out.append((where, ValidationError(where, _short(err.get("input")), reason)))
    return out


def _did_you_mean(value: str, valid: Iterable[str], cutoff: float = 0.4) -> str:
    """`did you mean 'x'? valid: a, b, x` (without the question when nothing is close)."""
    valid = sorted(valid)
    close = difflib.get_close_matches(str(value), valid, n=1, cutoff=cutoff)
    hint = f"did you mean {close[0]!r}? " if close else ""
    return hint + "valid: " + ", ".join(valid)


def _model_named(title: str) -> type | None:
    """This project's pydantic model called `title` (the name a pydantic error carries)."""
    import pydantic

    seen: set[type] = set()
    stack: list[type] = [pydantic.BaseModel]
    while stack:
        for sub in stack.pop().__subclasses__():
            if sub in seen:
                continue
            seen.add(sub)
            stack.append(sub)
            if sub.__name__ == title and sub.__module__.startswith(("plantcad_flows", "flows")):
                return sub
    return None


def _models_in(annotation: Any) -> list[Any]:
    """The models, lists and dicts an annotation may hold (through Optional, unions, Annotated)."""

    origin = typing.get_origin(annotation)
    if origin in (list, tuple, dict):
        return [annotation]
    if origin is not None:  # Union, Optional, Annotated, Literal: look inside
        return [m for a in typing.get_args(annotation) for m in _models_in(a)]
    return [annotation] if isinstance(annotation, type) and hasattr(annotation, "model_fields") else []


def _known_keys(model: type | None, loc: Iterable[object]) -> list[str]:
    """The keys the model at pydantic location `loc` (below `model`) accepts; [] if unknown."""

    here: list[Any] = [model] if model is not None else []
    for part in loc:
        nxt: list[Any] = []
        for t in here:
            origin = typing.get_origin(t)
            if origin in (list, tuple) and isinstance(part, int):
                nxt += [m for a in typing.get_args(t)[:1] for m in _models_in(a)]
            elif origin is dict and isinstance(part, str):
                nxt += [m for m in _models_in(typing.get_args(t)[-1])]
            elif hasattr(t, "model_fields") and part in t.model_fields:
                nxt += _models_in(t.model_fields[part].annotation)
        here = nxt
    keys = {
        k if f.alias is None else f.alias
        for t in here
        if hasattr(t, "model_fields")
        for k, f in t.model_fields.items()
    }
    return sorted(keys)


class UnknownNameError(ValidationError):
    """A name (task, model type, mode) that is not in its registry; suggests the closest."""

    def __init__(self, field: str, value: str, valid: Iterable[str]):
        super().__init__(field, value, "unknown name", _did_you_mean(value, valid))


class DeviceError(ValidationError):
    """A compute device that is not available here (e.g. cuda on a CPU-only host)."""


class StorageError(PlantCADError):
    """The storage prefix cannot be reached or written."""


class DiskFullError(StorageError):
    """A write under the prefix met a full disk (ENOSPC): nothing was marked complete."""


class IncompleteShardsError(PlantCADError):
    """Merged shards do not cover every sampled example exactly once."""


class CommandFailedError(PlantCADError):
    """A grid cell's command exited with a non-zero status."""

    def __init__(self, cell: str, returncode: int):
        self.cell = cell
        self.returncode = returncode
        super().__init__(f"{cell}: command exited with status {returncode}")


class GridFailedError(PlantCADError):
    """Some cells of a grid did not complete."""

    def __init__(self, project: str, cells: dict[str, str]):
        self.project = project
        self.cells = cells
        listed = ", ".join(f"{c} ({s})" for c, s in sorted(cells.items())[:5])
        more = f" and {len(cells) - 5} more" if len(cells) > 5 else ""
        super().__init__(f"grid {project}: {len(cells)} cell(s) did not complete: {listed}{more}")


class CellFailedError(PlantCADError):
    """A cell could not be finished (one of its shards failed); its failure marker is written."""

    def __init__(self, cell_id: str, reason: str):
        self.cell_id = cell_id
        self.reason = reason
        super().__init__(f"{cell_id}: {reason}")


class CorruptFileError(StorageError):
    """A data file whose bytes or row count differ from what was recorded when it was written.

    Never used: the step that wrote it is marked incomplete and computed again."""

    def __init__(self, path: str, problem: str):
        self.path = path
        self.problem = problem
        super().__init__(f"{path}: {problem}")
