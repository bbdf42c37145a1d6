"""One line per configuration problem, naming the field and the value: what the CLI prints
(with exit status 2) instead of a traceback when a config or its data is bad.

A command marks where its input is read with `bad_input(...)`; what fails there travels up as
`BadInput` to the one handler in `plantcad_flows.cli.main`, which prints these lines and exits 2.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pydantic
import yaml

from plantcad_flows.errors import problems


class BadInput(Exception):
    """Input a command could not use (`cause`, read from `source`): `main` prints its lines, exit 2."""

    def __init__(self, cause: BaseException, source: str | None = None):
        super().__init__(str(cause))
        self.cause, self.source = cause, source

    def lines(self) -> list[str]:
        return config_error_lines(self.cause, self.source)


@contextmanager
def bad_input(*kinds: type[BaseException], source: str | None = None) -> Iterator[None]:
    """Within, an error of `kinds` (any `Exception` when none is named) is bad input from `source`:
    raised again as `BadInput` for `main`'s one handler."""
    caught = kinds or (Exception,)
    try:
        yield
    except caught as e:
        raise BadInput(e, source) from e


def config_error_lines(exc: BaseException, source: str | None = None) -> list[str]:
    """The lines to print for a config error (pydantic, YAML or our own ValidationError)."""

    if isinstance(exc, yaml.YAMLError):
        # PyYAML's message spans several lines (with a caret drawing); keep only where and what
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = " ".join(str(getattr(exc, "problem", None) or exc).split())
        return [f"config error: invalid YAML in {source or 'config'}{where}: {problem}"]
    if isinstance(exc, pydantic.ValidationError):
        # one line per location: a union (`int | 'auto'`) fails once per member; those are merged
        grouped: dict[str, list[str]] = {}
        for where, problem in problems(exc):
            msg = str(problem) if problem.field == where else f"at {where}: {problem}"
            if msg not in grouped.setdefault(where, []):
                grouped[where].append(msg)
        merged = [_merge(msgs) for msgs in grouped.values()]
        return [f"config error{'' if m.startswith('at ') else ':'} {m}" for m in merged]
    return [f"config error: {' '.join(str(exc).split())}"]


def _merge(msgs: list[str]) -> str:
    """`field=value: A` and `field=value: B` -> `field=value: A; or B`."""
    if len(msgs) == 1:
        return msgs[0]
    head, sep, _ = msgs[0].partition(": ")
    if sep and all(m.startswith(head + ": ") for m in msgs):
        return head + ": " + "; or ".join(m[len(head) + 2 :] for m in msgs)
    return "; or ".join(msgs)
