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
        out = []
        for err in exc.errors():
            loc = ".".join(str(x) for x in err["loc"]) or "config"
            msg = err["msg"].removeprefix("Value error, ")
            if err["type"] == "extra_forbidden":
                msg = f"unknown key {loc.rsplit('.', 1)[-1]!r}"
            out.append(f"config error at {loc}: {msg}")
        return out
    return [f"config error: {' '.join(str(exc).split())}"]
