"""One line per configuration problem, naming the field and the value: what the CLI prints
(with exit status 2) instead of a traceback when a config or its data is bad."""

from __future__ import annotations


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
        # one line per field: a union (`int | 'auto'`) fails once per member, under the member's
        # name in `loc`; those are merged, and the rejected value is quoted
        grouped: dict[str, list[str]] = {}
        for err in exc.errors():
            loc = ".".join(str(x) for x in err["loc"] if not _union_member(x)) or "config"
            msg = err["msg"].removeprefix("Value error, ")
            if err["type"] == "extra_forbidden":
                msg = f"unknown key {loc.rsplit('.', 1)[-1]!r}"
            elif err["type"] != "value_error" and not isinstance(err.get("input"), (dict, list)):
                msg = f"{loc.rsplit('.', 1)[-1]}={_short(err.get('input'))}: {msg}"
            grouped.setdefault(loc, [])
            if msg not in grouped[loc]:
                grouped[loc].append(msg)
        return [f"config error at {loc}: {_merge(msgs)}" for loc, msgs in grouped.items()]
    return [f"config error: {' '.join(str(exc).split())}"]


def _union_member(part: object) -> bool:
    """A `loc` entry naming a union member (`int`, `literal['auto']`, `function-after[...]`)."""
    return isinstance(part, str) and (part in ("int", "float", "str", "bool", "none") or "[" in part)


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _merge(msgs: list[str]) -> str:
    """`field=value: A` and `field=value: B` -> `field=value: A; or B`."""
    if len(msgs) == 1:
        return msgs[0]
    head, sep, _ = msgs[0].partition(": ")
    if sep and all(m.startswith(head + ": ") for m in msgs):
        return head + ": " + "; or ".join(m[len(head) + 2 :] for m in msgs)
    return "; or ".join(msgs)
