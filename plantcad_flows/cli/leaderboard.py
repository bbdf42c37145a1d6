"""`plantcad-flows leaderboard`: a run's results as the PlantCAD2 leaderboard shows them.

Per model and context: the leaderboard's task ids with the forward, reverse-complement and
selected values, the group means and the composite (`results/leaderboard.py`), printed and
written under the run directory. `--run` defaults to the latest run under the prefix (the one
whose results.json was written last). Reads files only: no Prefect, no model.

Exit 2, one line naming the field and the value: a prefix without runs, a run that does not
exist, a run none of whose results is a leaderboard task, a task file that does not load. A
view with missing tasks is printed (the missing ones listed; no group mean or composite over
them) and exits 0: the run answers what it can, and the listing says what it cannot.
"""

from __future__ import annotations

import argparse
import sys

from plantcad_flows.cli.history import DEFAULT_PREFIX
from plantcad_flows.errors import PlantCADError, UnknownNameError, ValidationError
from plantcad_flows.families import task_registry


def run_dirs(prefix: str) -> list:
    """The run directories under `prefix` that hold a results.json, oldest first."""
    from plantcad_flows.layout.storage import to_path

    root = to_path(prefix) / "runs"
    if not root.exists():
        return []
    found = [d for d in root.iterdir() if (d / "results.json").exists()]

    def written(d) -> tuple:
        try:
            return ((d / "results.json").stat().st_mtime, d.name)
        except (OSError, AttributeError, NotImplementedError):
            return (0.0, d.name)

    return sorted(found, key=written)


def pick_run(prefix: str, run: str | None):
    """The run directory to show.

    Raises:
        ValidationError: naming `--prefix` (no runs) or `--run` (no such run).
    """
    runs = run_dirs(prefix)
    if run is None:
        if not runs:
            raise ValidationError("--prefix", prefix, "holds no run with results (runs/*/results.json)")
        return runs[-1]
    names = [d.name for d in runs]
    if run not in names:
        if names:
            raise UnknownNameError("--run", run, names)
        raise ValidationError("--run", run, f"no such run under {prefix} (it holds none)")
    return runs[names.index(run)]


def build(prefix: str, run: str | None, task_files: list[str]):
    """(run directory, views) of one run.

    Raises:
        ValidationError: a bad prefix, run or task file, or a run with no leaderboard task.
    """
    from plantcad_flows.results.leaderboard import build_views
    from plantcad_flows.results.table import read_results_rows

    run_dir = pick_run(prefix, run)
    tasks = task_registry(task_files)
    rows, _ = read_results_rows(str(run_dir))
    views = build_views(rows, tasks)
    if not views:
        raise ValidationError(
            "--run",
            run_dir.name,
            "none of its results is a leaderboard task (see `leaderboard:` in the task files)",
        )
    return run_dir, views


def cmd_leaderboard(args: argparse.Namespace) -> int:
    from plantcad_flows.results.leaderboard import format_views, write_views

    prefix = args.prefix or DEFAULT_PREFIX
    try:
        run_dir, views = build(prefix, args.run, args.task_file or [])
    except (ValidationError, PlantCADError) as e:
        print(f"leaderboard: {e}", file=sys.stderr)
        return 2
    print(f"run {run_dir.name} ({run_dir})\n")
    print(format_views(views), end="")
    written = write_views(str(run_dir), views)
    for board, paths in written.items():
        print(f"\n{board}: {len(paths)} file(s) written; combined table {paths[0]}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "leaderboard",
        help="a run's results as the PlantCAD2 leaderboard: selected strand per task, group means, composite",
    )
    p.add_argument("--prefix", help=f"storage prefix (default {DEFAULT_PREFIX})")
    p.add_argument("--run", help="run name (a directory under {prefix}/runs; default: the latest)")
    p.add_argument(
        "--task-file",
        action="append",
        metavar="FILE",
        help="a task file whose `leaderboard:` entries join the view (repeatable)",
    )
    p.set_defaults(func=cmd_leaderboard)
