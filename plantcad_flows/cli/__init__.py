"""`plantcad-flows` command line: one module per subcommand.

`eval` / `demo` (run.py), `sweep-demo`, `vep-demo`, `tasks`, `generate-data` (data.py), `server`, `history`,
`leaderboard`, `grid` (experiment grids), `sync` and `publish` (a run to the Hugging Face hub) are built here;
`setup`, `preview-job` and `env` own their flags and are delegated whole to their modules.
Only the modules that start runs or talk to a server (run.py, grid.py; services/prefect_server.py) import Prefect,
and only when a run really starts: parsing, validation and the dry run stay light.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from plantcad_flows.cli import (
    data,
    grid,
    history,
    leaderboard,
    publish,
    run,
    server,
    sweep_demo,
    sync,
    tasks,
    vep_demo,
)
from plantcad_flows.cli.config_errors import BadInput, config_error_lines
from plantcad_flows.errors import ValidationError

DELEGATED = {
    "setup": "deployments.setup",
    "preview-job": "deployments.preview_job",
    "env": "plantcad_flows.cluster.env",
}
_DELEGATED_HELP = {
    "setup": "create work pools, blocks and deployments (see infra/README.md)",
    "preview-job": "print the Kubernetes Job a run would submit for --job-variables JSON",
    "env": "report where this process runs: scheduler, hosts, GPUs, Ray address",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="plantcad-flows",
        description="Evaluate DNA language models on the PlantCAD2 zero-shot benchmark with Prefect",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for module in (run, sweep_demo, vep_demo, tasks, data, server, history, leaderboard, grid, sync, publish):
        module.register(sub)
    for name, text in _DELEGATED_HELP.items():
        sub.add_parser(name, help=text, add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in DELEGATED:
        # these commands own their flags (argparse.REMAINDER would swallow `--x` options)
        return importlib.import_module(DELEGATED[argv[0]]).main(argv[1:])
    args = build_parser().parse_args(argv)

    try:
        code = args.func(args)
        sys.stdout.flush()  # here, where a closed pipe can still be caught, not at exit
        return code
    except BadInput as e:  # what a command read where it said `bad_input(...)`
        print(*e.lines(), sep="\n", file=sys.stderr)
        return 2
    except ValidationError as e:  # bad input a command did not check first (a setting read on import)
        print(*config_error_lines(e), sep="\n", file=sys.stderr)
        return 2
    except BrokenPipeError:
        return closed_pipe()


def closed_pipe() -> int:
    """The reader of stdout went away (`history ... | head`): end quietly, as `cat` does.

    Python would report the unflushed output at exit, so stdout is pointed at /dev/null first.
    Returns 141, the status of a process ended by SIGPIPE."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    return 128 + 13


if __name__ == "__main__":
    sys.exit(main())
