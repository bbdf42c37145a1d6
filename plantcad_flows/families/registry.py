"""The registry of task families, by name. A family is found, not listed: every module of this
package that defines a `TaskFamily` subclass with a `name` registers it, so adding a family is one
new module (plus its tests). Families come in the order their tasks first appear in the shipped
task file (the order of the pivot's blocks), then the others by name."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

from plantcad_flows.errors import UnknownNameError
from plantcad_flows.families.base import TaskFamily


def _discover() -> dict[str, TaskFamily]:
    import plantcad_flows.families as package
    from plantcad_flows.families.tasks import BUILTIN_TASK_FILE, task_entries

    found: dict[str, TaskFamily] = {}
    for info in pkgutil.iter_modules(package.__path__):
        module = importlib.import_module(f"{package.__name__}.{info.name}")
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if issubclass(cls, TaskFamily) and "name" in vars(cls) and cls.__module__ == module.__name__:
                if cls.name in found:
                    raise RuntimeError(f"two families named {cls.name!r}: {type(found[cls.name])} and {cls}")
                found[cls.name] = cls()
    shipped = [t["family"] for t in task_entries(BUILTIN_TASK_FILE)]
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
