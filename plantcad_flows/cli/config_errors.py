"""One line per configuration problem, naming the field and the value: what the CLI prints
(with exit status 2) instead of a traceback when a config or its data is bad."""

from __future__ import annotations

from plantcad_flows.errors import problems


def config_error_lines(exc: Exception, source: str | None = None) -> list[str]:
    """The lines to print for a config error (pydantic, YAML or our own ValidationError)."""
    import pydantic
    import yaml

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
