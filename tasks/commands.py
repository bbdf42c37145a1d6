"""Tasks of the run-command flow: run a cell's shell command, and upload its outputs.

Neither is cached (a command's effects are outside Prefect's view, so rerunning a cell means
running it). The command is never retried: a failing training script fails its cell, and
`grid submit` resubmits it. The upload is retried on transient storage errors (tasks/policy.py).
Both run in the flow's main thread, so a cancelled run's SIGTERM reaches the command's loop and
stops its process group (plantcad_flows/cluster/commands.py).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from plantcad_flows.cluster.commands import Workspace, run_streaming
from plantcad_flows.layout.storage import mark_complete, mark_failed, to_path
from plantcad_flows.layout.sync import remove_tree, sync
from tasks.policy import RETRY_OPTIONS


@task(name="run-shell-command", cache_policy=NO_CACHE, persist_result=False)
def run_shell(
    command: str, workspace: Workspace, env: Mapping[str, str], secret_names: Sequence[str] = ()
) -> int:
    """Run the command in the workspace; every line of its output goes to the run's log."""
    logger = get_run_logger()
    logger.info("$ %s", command)
    logger.info("working directory %s (outputs/ is this cell's own)", workspace.root)
    code = run_streaming(
        command,
        workspace.root,
        env,
        on_line=logger.info,
        secret_names=secret_names,
        on_start=lambda pid: logger.info("command started, pid %d (own process group)", pid),
    )
    (logger.info if code == 0 else logger.error)("command exited with status %d", code)
    return code


@task(name="clear-cell-outputs", cache_policy=NO_CACHE, persist_result=False, **RETRY_OPTIONS)
def clear_outputs(output_uri: str) -> None:
    """Remove an earlier attempt's outputs, so nothing stale is taken for this run's."""
    if remove_tree(output_uri):
        get_run_logger().info("removed the outputs of an earlier attempt at %s", output_uri)


@task(name="upload-cell-outputs", cache_policy=NO_CACHE, persist_result=False, **RETRY_OPTIONS)
def upload_outputs(outputs: str, output_uri: str, cell: str, command: str, returncode: int) -> int:
    """Copy `outputs/` to the cell's output location, then mark it complete (or failed) last."""
    report = sync(outputs, output_uri)
    get_run_logger().info("outputs/ -> %s: %s", output_uri, report.summary())
    target = to_path(output_uri)
    if returncode == 0:
        mark_complete(target, {"cell": cell, "command": command}, {"files": len(report.copied)})
    else:
        mark_failed(target, f"command exited with status {returncode}")
    return len(report.copied)


def command_env(env: Mapping[str, str] | None, cell: str, outputs: str) -> dict[str, str]:
    """The command's environment: this process's, the cell's `env` on top, and where it is."""
    merged = dict(os.environ)
    merged.update(env or {})
    merged.update(PLANTCAD_GRID_CELL=cell, PLANTCAD_GRID_OUTPUTS=outputs, PYTHONUNBUFFERED="1")
    return merged
