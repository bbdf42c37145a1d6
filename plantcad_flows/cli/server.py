"""`plantcad-flows server`: a local Prefect server on 127.0.0.1 in the foreground, for the UI and
for runs that should share one server (`make server`). Runs never stop a server they did not
start, so this one stays up until you stop it; it records itself as shared (`services/server_records.py`), and
its UI talks to the API on its own `--port`.

`--database sqlite` (the default) keeps Prefect's embedded SQLite database. `--database
postgres` puts the server on a local PostgreSQL that this command initialises (the first time)
and starts under `--pg-dir`, and stops again when the server stops (`services/postgres.py`): the
choice for sweeps of hundreds of cells, where SQLite reports "database is locked".
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess

from plantcad_flows.cli.config_errors import bad_input
from plantcad_flows.errors import PlantCADError
from plantcad_flows.services.postgres import local_postgres, server_settings
from plantcad_flows.services.prefect_server import DEFAULT_HOST, prefect_executable
from plantcad_flows.services.server_records import write_record


def _command(exe: str, port: int) -> list[str]:
    return [exe, "server", "start", "--host", DEFAULT_HOST, "--port", str(port)]


def server_env(port: int) -> dict[str, str]:
    """The server's environment: its own port in its settings too, or its UI (`/ui-settings`)
    would send the browser to the API at 127.0.0.1:4200."""

    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env.update(
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_SERVER_API_HOST=DEFAULT_HOST,
        PREFECT_SERVER_API_PORT=str(port),
        PREFECT_UI_API_URL=f"http://{DEFAULT_HOST}:{port}/api",
    )
    return env


def cmd_server(args: argparse.Namespace) -> int:
    exe = prefect_executable()
    env = server_env(args.port)
    if args.database == "sqlite":
        # runs that find it read this record and share it: it outlives them (the pid survives exec)
        write_record(args.port, os.getpid(), True, "plantcad-flows server")
        os.execvpe(exe, _command(exe, args.port), env)

    with bad_input(PlantCADError):
        pg = local_postgres(args.pg_dir)
        pg.start()
    print(f"PostgreSQL under {pg.data} on 127.0.0.1:{pg.port} (database prefect, pg_trgm)", flush=True)
    server = subprocess.Popen(_command(exe, args.port), env={**env, **server_settings(pg.url)})
    write_record(args.port, server.pid, True, "plantcad-flows server --database postgres")
    signal.signal(signal.SIGTERM, lambda *_: server.send_signal(signal.SIGINT))
    try:
        while True:
            try:
                return server.wait()
            except KeyboardInterrupt:
                server.send_signal(signal.SIGINT)  # then wait for it to shut down
    finally:
        pg.stop()
        print(f"PostgreSQL under {pg.data} stopped", flush=True)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("server", help="run a local Prefect server (127.0.0.1) in the foreground")
    p.add_argument("--port", type=int, default=4200)
    p.add_argument(
        "--database",
        choices=("sqlite", "postgres"),
        default="sqlite",
        help="sqlite (embedded, the default) or postgres (a local PostgreSQL this command starts)",
    )
    p.add_argument(
        "--pg-dir",
        default=None,
        help="where the PostgreSQL cluster lives (default ~/.local/share/plantcad-flows/pg; "
        "for root /var/lib/plantcad-flows/pg)",
    )
    p.set_defaults(func=cmd_server)
