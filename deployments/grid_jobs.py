"""The Kubernetes Job of each cell of a grid, as the kubernetes worker would create it.

`grid plan --manifests DIR` writes `DIR/{cell}.yaml` for every cell that runs on a kubernetes pool:
the cell's deployment's job variables from prefect.yaml, the cell's own on top (a run's job
variables replace the deployment's key by key, as the worker merges them), rendered by
prefect-kubernetes' own code through `preview_job.py` and, with `--validate`, checked
against the Kubernetes OpenAPI schema. No cluster and no server are needed.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import yaml

from deployments.preview_job import PREFECT_YAML, load_template, render_job, validate_manifest
from plantcad_flows.grid.expand import EVAL_FLOW, RUN_COMMAND_FLOW, GridCell
from plantcad_flows.grid.secret_env import with_secrets

ENTRYPOINTS = {
    RUN_COMMAND_FLOW: "flows/run_command.py:run_command",
    EVAL_FLOW: "flows/zero_shot_eval.py:zero_shot_eval",
}


def deployment_job_variables(deployment: str, prefect_yaml: Path | None = None) -> dict[str, Any]:
    """The job variables prefect.yaml gives deployment `flow/name` ({} when it is not there)."""
    flow, _, name = deployment.partition("/")
    spec = yaml.safe_load(Path(prefect_yaml or PREFECT_YAML).read_text())
    for dep in spec.get("deployments", []):
        if dep.get("name") == name and dep.get("entrypoint") == ENTRYPOINTS.get(flow):
            return dict((dep.get("work_pool") or {}).get("job_variables") or {})
    return {}


def cell_job(cell: GridCell, prefect_yaml: Path | None = None) -> dict[str, Any]:
    """The Job manifest of one kubernetes cell."""
    variables = deployment_job_variables(cell.deployment, prefect_yaml)
    variables.update(cell.job_variables)
    return render_job(variables, flow_run_name=cell.name)


def write_manifests(
    cells: Sequence[GridCell], dest: Path, secret_names: Sequence[str] = (), k8s_version: str | None = None
) -> Iterator[str]:
    """Write each kubernetes cell's Job to `dest/{cell}.yaml`; yields one line per cell."""
    dest.mkdir(parents=True, exist_ok=True)
    base = load_template()["variables"]["properties"]["secret_env"]["default"]
    for cell in cells:
        if cell.pool != "kubernetes":
            yield f"{cell.name}: runs on a process pool, no Job"
            continue
        job = cell_job(with_secrets(cell, secret_names, base))
        path = dest / f"{cell.name}.yaml"
        path.write_text(yaml.safe_dump(job, sort_keys=False))
        problems = validate_manifest(job, k8s_version) if k8s_version else []
        verdict = "; ".join(problems) if problems else ("valid" if k8s_version else "written")
        yield f"{cell.name}: {path} ({verdict})"
