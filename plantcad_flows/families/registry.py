"""The registry of task families, by name. A family is found, not listed: every module of this
package that defines a `TaskFamily` subclass with a `name` registers it, so adding a family is one
new module (plus its tests). Families come in the order their tasks first appear in the shipped
task file (the order of the pivot's blocks), then the others by name."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from pathlib import Path

import yaml

from plantcad_flows.errors import UnknownNameError
from plantcad_flows.families.base import TaskFamily

# the shipped task set; its order of families is the registry's (`tasks.builtin_tasks` reads it)
BUILTIN_TASK_FILE = Path(__file__).resolve().parents[1] / "assets" / "tasks" / "plantcad2.yaml"


def _shipped_families() -> list[str]:
    """The family of each task of the shipped file, in file order (a task file is a list of
    tasks, or `{defaults: ..., tasks: [...]}`); read here, not through `tasks`, which imports
    this module."""
    data = yaml.safe_load(BUILTIN_TASK_FILE.read_text())
    if isinstance(data, dict):
        default = (data.get("defaults") or {}).get("family")
        return [t.get("family", default) for t in data.get("tasks") or []]
    return [t["family"] for t in data or []]


def _discover() -> dict[str, TaskFamily]:
    # the package by its path and name, not by an import of it: its __init__ imports this module
    found: dict[str, TaskFamily] = {}
    for info in pkgutil.iter_modules([str(Path(__file__).parent)]):
        module = importlib.import_module(f"{__package__}.{info.name}")
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if issubclass(cls, TaskFamily) and "name" in vars(cls) and cls.__module__ == module.__name__:
                if cls.name in found:
                    raise RuntimeError(f"two families named {cls.name!r}: {type(found[cls.name])} and {cls}")
                found[cls.name] = cls()
    shipped = _shipped_families()
    rank = {name: i for i, name in reversed(list(enumerate(shipped)))}
    return dict(sorted(found.items(), key=lambda kv: (rank.get(kv[0], len(shipped)), kv[0])))


FAMILIES: dict[str, TaskFamily] = _discover()


def register(cls: type[TaskFamily]) -> type[TaskFamily]:
    """Register a family defined outside this package (a plugin, or a test's own); usable as a
    class decorator. Its tasks are then written in YAML like any other.

    Raises:
        RuntimeError: a family of that name is registered already.
    """
    if cls.name in FAMILIES:
        raise RuntimeError(f"two families named {cls.name!r}: {type(FAMILIES[cls.name])} and {cls}")
    FAMILIES[cls.name] = cls()
    return cls


def get_family(name: str, field: str = "family") -> TaskFamily:
    """The family registered as `name`; an unknown name raises with the closest valid one."""
    try:
        return FAMILIES[name]
    except KeyError:
        raise UnknownNameError(field, name, FAMILIES) from None
