"""`plantcad-flows tasks`: the task registry (built-in and from task files), as evaluation
harnesses list their tasks, each with the file that defines it."""

from __future__ import annotations

import argparse
import sys


def format_registry(task_files: list[str] | tuple[str, ...] = ()) -> str:
    from plantcad_flows.families import task_registry

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
    widths = [max(len(r[i]) for r in (header, *rows)) for i in range(len(header))]
    lines = ["  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip() for r in (header, *rows)]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines.append(f"{len(rows)} tasks; masks are 0-based positions in each task's native sequence length")
    return "\n".join(lines)


def cmd_tasks(args: argparse.Namespace) -> int:
    from plantcad_flows.errors import ValidationError

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
