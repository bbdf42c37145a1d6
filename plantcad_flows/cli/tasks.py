"""`plantcad-flows tasks`: the task registry (built-in and from task files), as evaluation
harnesses list their tasks, each with the file that defines it."""

from __future__ import annotations

import argparse
import sys

from plantcad_flows.errors import ValidationError
from plantcad_flows.families import task_registry
from plantcad_flows.tables import text_table


def format_registry(task_files: list[str] | tuple[str, ...] = ()) -> str:
    tasks = task_registry(list(task_files))
    header = ("task", "family", "splits", "settings", "metrics", "source")
    rows = [
        (
            t.name,
            t.family,
            ", ".join(t.splits),
            t.family_object.settings_text(t),
            ", ".join(t.family_object.metrics),
            t.source,
        )
        for t in tasks.values()
    ]
    lines = text_table(header, rows, rule="  ")
    lines.append(f"{len(rows)} tasks; masks are 0-based positions in each task's native sequence length")
    return "\n".join(lines)


def cmd_tasks(args: argparse.Namespace) -> int:
    try:
        print(format_registry(args.task_file or ()))
    except ValidationError as e:
        print(f"task file error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "tasks", help="list the tasks (built-in and from task files): family, splits, masks, metrics"
    )
    p.add_argument(
        "--task-file", action="append", metavar="FILE", help="a YAML task file of your own (repeatable)"
    )
    p.set_defaults(func=cmd_tasks)
