"""`plantcad-flows tasks`: the benchmark registry, as evaluation harnesses list their tasks."""

from __future__ import annotations

import argparse


def format_registry() -> str:
    from plantcad_flows.benchmark.registry import TASKS

    header = ("task", "family", "splits", "default masks", "metrics")
    rows = [
        (
            t.name,
            t.family.value,
            ", ".join(t.splits),
            str(list(t.mask_positions)) if t.mask_positions else "none (REF/ALT pair)",
            ", ".join(t.metrics),
        )
        for t in TASKS.values()
    ]
    widths = [max(len(r[i]) for r in (header, *rows)) for i in range(len(header))]
    lines = ["  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip() for r in (header, *rows)]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines.append(f"{len(rows)} tasks; masks are 0-based positions in the native 8,192-bp sequence")
    return "\n".join(lines)


def cmd_tasks(args: argparse.Namespace) -> int:
    print(format_registry())
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("tasks", help="list the benchmark's tasks: family, splits, masks, metrics")
    p.set_defaults(func=cmd_tasks)
