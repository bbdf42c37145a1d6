"""The `grid` flow: one run per cell of an experiment grid, each under the grid's run in the UI.

Wiring only:
1. read the grid's earlier runs (tag `grid:<project>`) and decide per cell (core:
   plantcad_flows/grid/runs.py): skip what is Completed or on its way, submit what never ran or
   Failed, Crashed or was Cancelled (everything with `overwrite`);
2. without `local`: create one deployment run per cell with `run_deployment` (`timeout=0`: create,
   do not wait), which links it to this run as a subflow run, with the cell's parameters, job
   variables, tags `grid:<project>` and `cell:<name>`, and idempotency key `{cell}-{attempt}`. With
   `max_running`, the runs go to the work queue `grid-<project>` whose concurrency limit is the
   cap (tasks/grid_runs.py). Then watch until every submitted run is final (unless `wait` is
   off), logging each change of state;
3. with `local`: run each cell here, one after another, as a subflow (`run-command` or
   `zero-shot-eval`), with no deployment and no worker;
4. a markdown artifact with every cell's state; the run fails when a cell did not complete.

`grid purge` cancels this run too; the watch then stops and the run ends Cancelled.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger, tags
from prefect.artifacts import create_markdown_artifact
from prefect.context import get_run_context
from prefect.deployments import run_deployment
from prefect.states import Cancelled

from flows.run_command import run_command
from plantcad_flows.config import EvalConfig
from plantcad_flows.errors import GridFailedError
from plantcad_flows.grid.expand import GridCell
from plantcad_flows.grid.runs import Decision, decide, format_status_markdown, latest_by_cell, summarize
from tasks.grid_runs import deployment_pool, ensure_queue, grid_runs, read_runs, watch


def cell_parameters(cell: GridCell, secret_names: list[str]) -> dict[str, Any]:
    """The parameters of the cell's deployment run."""
    if cell.kind == "eval":
        return {"config": cell.eval_config}
    return {
        "command": cell.command,
        "cell": cell.name,
        "output_uri": cell.output_uri,
        "env": dict(cell.env),
        "secret_names": list(secret_names),
    }


def _submit(
    todo: list[Decision], project: str, max_running: int | None, secret_names: list[str]
) -> list[str]:
    pools = {dep: deployment_pool(dep) for dep in {d.cell.deployment for d in todo}}  # fails before any run
    queues = {pool: ensure_queue(pool, project, max_running) for pool in set(pools.values()) if max_running}
    ids = []
    for d in todo:
        run = run_deployment(
            d.cell.deployment,
            parameters=cell_parameters(d.cell, secret_names),
            job_variables=d.cell.job_variables,
            tags=list(d.cell.tags),
            idempotency_key=d.idempotency_key,
            work_queue_name=queues.get(pools[d.cell.deployment]),
            flow_run_name=d.cell.name,
            timeout=0,
        )
        get_run_logger().info(
            "submitted %s (attempt %d, %s): flow run %s", d.cell.name, d.attempt, d.reason, run.id
        )
        ids.append(str(run.id))
    return ids


def _run_here(cell: GridCell, secret_names: list[str]):
    with tags(*cell.tags):
        if cell.kind == "eval":
            # The eval flow brings torch with it: imported only when a cell needs it here.
            from flows.zero_shot_eval import zero_shot_eval

            config = EvalConfig.model_validate(cell.eval_config)
            return zero_shot_eval.with_options(flow_run_name=cell.name)(config, return_state=True)
        env = dict(cell.job_variables.get("env") or cell.env)  # process pool: env + visible GPUs
        return run_command.with_options(flow_run_name=cell.name)(
            command=cell.command,
            cell=cell.name,
            output_uri=cell.output_uri,
            env=env,
            secret_names=secret_names,
            return_state=True,
        )


def _cancelling() -> bool:
    own = get_run_context().flow_run.id
    return any(r.state_type == "CANCELLING" for r in read_runs([str(own)]))


@flow(name="grid", log_prints=True)
def grid(
    project: str,
    cells: list[GridCell],
    overwrite: bool = False,
    local: bool = False,
    wait: bool = True,
    max_running: int | None = None,
    secret_names: list[str] | None = None,
    poll_s: float = 5.0,
):
    """Submit (or, with `local`, run here) every cell of a grid that needs to run."""
    logger = get_run_logger()
    secret_names = secret_names or []
    earlier = grid_runs(project)
    decisions = decide(cells, earlier, overwrite)
    logger.info(summarize(decisions))
    todo = [d for d in decisions if d.submit]
    cancelled = False
    if local:
        for d in todo:
            state = _run_here(d.cell, secret_names)
            logger.info("%s: %s", d.cell.name, state.name)
    else:
        ids = _submit(todo, project, max_running, secret_names)
        # Cells skipped because an earlier submission is still on its way are watched too.
        latest = latest_by_cell(earlier)
        ids += [
            latest[d.cell.name].id for d in decisions if not d.submit and not latest[d.cell.name].is_final
        ]
        if wait and ids:
            watch(ids, lambda r: logger.info("%s: %s", r.cell, r.state_name), poll_s, stop=_cancelling)
            cancelled = _cancelling()
    records = grid_runs(project)
    create_markdown_artifact(
        key=f"grid-{project}", markdown=format_status_markdown(cells, records), description=f"grid {project}"
    )
    if cancelled:
        return Cancelled(message="grid purged")
    if not wait and not local:
        return [{"cell": d.cell.name, "attempt": d.attempt, "submitted": d.submit} for d in decisions]
    latest = latest_by_cell(records)
    states = {c.name: (latest[c.name].state_name if c.name in latest else "not submitted") for c in cells}
    failed = {
        name: s
        for name, s in states.items()
        if latest.get(name) is None or latest[name].state_type != "COMPLETED"
    }
    if failed:
        raise GridFailedError(project, failed)
    return [{"cell": name, "state": s} for name, s in states.items()]
