"""Cell names: `{project}-{model}-{dataset}-{k}-{v}...-{hash}`, valid wherever a cell shows up.

A name is the cell's identity across resubmissions (the grid flow tags runs `cell:<name>` and
finds a cell's latest run by it), so it must be unique, stable and accepted by every system it
reaches:

- lower case letters, digits and `-`, starting and ending with a letter or digit: an RFC 1123
  label, valid as a Kubernetes name, a label value and a path segment;
- at most `MAX_NAME_LENGTH` (57) characters: the kubernetes pool's job template names the Job
  `generateName: "{{ name }}-"`, which appends `-` and 5 characters, and a Job name must fit the
  63-character label the Job controller puts on its pods, so the whole cell name, hash included,
  stays visible in `kubectl get jobs`;
- always ending in `HASH_LENGTH` (10) base-32 characters of a SHA-256 over the model, the dataset
  and every hyper-parameter, hidden (`_`) ones included. The readable part can then be
  abbreviated freely: two distinct cells differ in the hash (50 bits: for 10,000 cells the chance
  of any collision is about 4e-8).

Only the cell's coordinates move the hash. Resources, the command text and the target do not, so
raising a cell's memory and resubmitting finds the same cell instead of starting a new one.

Visible hyper-parameters appear sorted by name, so reordering keys in grid.yaml keeps names.
When the readable part is too long, multi-word keys are shortened to their initials
(`learning_rate` -> `lr`), then the longest segment is trimmed one character at a time, and as a
last resort trailing segments are dropped; the project segment always stays.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from typing import Any

from plantcad_flows.errors import ValidationError

MAX_NAME_LENGTH = 57
HASH_LENGTH = 10
NAME_PATTERN = re.compile(r"^[a-z0-9](?:[-a-z0-9]*[a-z0-9])?$")
_NOT_ALNUM = re.compile(r"[^a-z0-9]+")


def is_hidden(hparam: str) -> bool:
    """A hyper-parameter starting with `_` is substituted into commands but not shown in names."""
    return hparam.startswith("_")


def format_value(value: Any) -> str:
    """How a hyper-parameter value is written into a command, a name or a filter comparison."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def cell_hash(model: str, dataset: str, hparams: Mapping[str, Any]) -> str:
    """`HASH_LENGTH` characters of [a-z2-7] identifying (model, dataset, every hyper-parameter)."""
    payload = json.dumps(
        {"model": model, "dataset": dataset, "hparams": dict(hparams)},
        sort_keys=True,
        separators=(",", ":"),
        default=str,
    )
    digest = hashlib.sha256(payload.encode()).digest()
    return base64.b32encode(digest).decode().lower()[:HASH_LENGTH]


def _segment(text: str) -> str:
    return _NOT_ALNUM.sub("-", text.lower()).strip("-")


def _initials(key: str) -> str:
    words = key.split("-")
    return "".join(w[0] for w in words) if len(words) > 1 else key


def _shorten(segments: list[str], budget: int, key_positions: set[int]) -> list[str]:
    def length(segs: list[str]) -> int:
        return sum(len(s) for s in segs) + max(len(segs) - 1, 0)

    if length(segments) <= budget:
        return segments
    segs = [_initials(s) if i in key_positions else s for i, s in enumerate(segments)]
    while length(segs) > budget:
        longest = max(range(len(segs)), key=lambda i: len(segs[i]))
        if len(segs[longest]) <= 1:
            break
        segs[longest] = segs[longest][:-1].rstrip("-") or segs[longest][0]
    while length(segs) > budget and len(segs) > 1:
        segs.pop()
    return segs


def cell_name(project: str, model: str, dataset: str, hparams: Mapping[str, Any]) -> str:
    """The cell's name: readable part (abbreviated to fit) + `-` + hash of every hyper-parameter.

    Args:
        project: the grid's project (already lower case, letters, digits and `-`).
        model, dataset: entry names as written in grid.yaml.
        hparams: every hyper-parameter of the cell, names as written (hidden ones with their `_`).
    """
    segments = [s for s in (_segment(project), _segment(model), _segment(dataset)) if s]
    key_positions: set[int] = set()
    for key in sorted(k for k in hparams if not is_hidden(k)):
        k, v = _segment(key), _segment(format_value(hparams[key]))
        if k:
            key_positions.add(len(segments))
            segments.append(k)
        if v:
            segments.append(v)
    body = "-".join(_shorten(segments, MAX_NAME_LENGTH - HASH_LENGTH - 1, key_positions))
    digest = cell_hash(model, dataset, hparams)
    return f"{body}-{digest}" if body else digest


def is_valid_name(name: str) -> bool:
    """An RFC 1123 label of at most `MAX_NAME_LENGTH` characters."""
    return len(name) <= MAX_NAME_LENGTH and bool(NAME_PATTERN.match(name))


def check_unique(cells: Iterable[Any]) -> None:
    """Raise when two cells (objects with name, model, dataset, hparams) share a name.

    Distinct coordinates always hash apart, so a clash means the same cell was listed twice,
    typically a hyper-parameter list holding the same value twice.

    Raises:
        ValidationError: naming the duplicated cell name and both cells' coordinates.
    """
    seen: dict[str, Any] = {}
    for cell in cells:
        first = seen.setdefault(cell.name, cell)
        if first is not cell:
            both = f"{_coordinates(first)} and {_coordinates(cell)}"
            raise ValidationError(
                "cells", cell.name, "two cells have the same name", f"{both}; is a value listed twice?"
            )


def _coordinates(cell: Any) -> str:
    return f"{cell.model} x {cell.dataset} {dict(cell.hparams)}"
