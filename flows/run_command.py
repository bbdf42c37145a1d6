"""The `run-command` flow: one grid cell's shell command, wherever a pool runs it.

Wiring only:
1. a working directory of the cell's own (the launch directory's entries linked, a fresh
   `outputs/`), and the earlier attempt's outputs removed from `output_uri`;
2. the command, in a shell with the cell's environment, its output streamed into the run's log
   line by line (secret values redacted);
3. `outputs/` uploaded to `output_uri` (`{prefix}/grids/{project}/{cell}/`: a local directory,
   `s3://` or `hf://`), then `_SUCCESS` (or `_FAILED`) written last;
4. the run ends Failed when the command exited non-zero.

A cancelled run (`grid purge`) stops the command's whole process group before the flow exits.
Deployed on every pool (prefect.yaml): `run-command/local`, `run-command/kubernetes`,
`run-command/lambda`; the cell's resources arrive as job variables.
"""

from __future__ import annotations

import os
from typing import Any

from prefect import flow, get_run_logger

from plantcad_flows.cluster.commands import open_workspace
from plantcad_flows.errors import CommandFailedError
from tasks.commands import clear_outputs, command_env, run_shell, upload_outputs


@flow(name="run-command", log_prints=True)
def run_command(
    command: str,
    cell: str = "command",
    output_uri: str | None = None,
    env: dict[str, str] | None = None,
    secret_names: list[str] | None = None,
) -> dict[str, Any]:
    """Run `command` in a shell in a working directory of its own and upload its `outputs/`.

    Args:
        command: shell text, placeholders already filled.
        cell: the grid cell's name (shown in logs, names the working directory).
        output_uri: where `outputs/` goes; nothing is uploaded without one.
        env: variables set for the command, over the worker's environment.
        secret_names: variables whose values are redacted from the log (names, never values).
    """
    workspace = open_workspace(cell, launch_dir=os.getcwd())
    try:
        if output_uri:
            clear_outputs(output_uri)
        code = run_shell(
            command, workspace, command_env(env, cell, str(workspace.outputs)), secret_names or []
        )
        uploaded = (
            upload_outputs(str(workspace.outputs), output_uri, cell, command, code) if output_uri else 0
        )
    finally:
        workspace.remove()
    if code != 0:
        raise CommandFailedError(cell, code)
    get_run_logger().info("%s: done, %d output file(s) in %s", cell, uploaded, output_uri)
    return {"cell": cell, "returncode": code, "output_uri": output_uri, "files": uploaded}
