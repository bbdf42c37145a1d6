"""`plantcad-flows server`: a local Prefect server on 127.0.0.1 in the foreground, for the UI and
for runs that should share one server (`make server`). Runs never stop a server they did not
start, so this one stays up until you stop it."""

from __future__ import annotations

import argparse
import os


def cmd_server(args: argparse.Namespace) -> int:
    from plantcad_flows.cli.prefect_server import DEFAULT_HOST, prefect_executable

    exe = prefect_executable()
    env = dict(os.environ, PREFECT_SERVER_ANALYTICS_ENABLED="false")
    os.execvpe(exe, [exe, "server", "start", "--host", DEFAULT_HOST, "--port", str(args.port)], env)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("server", help="run a local Prefect server (127.0.0.1) in the foreground")
    p.add_argument("--port", type=int, default=4200)
    p.set_defaults(func=cmd_server)
