"""`plantcad-flows preview-job`: the Kubernetes Job the worker would submit, without a cluster.

The manifest is rendered by prefect-kubernetes' own code, in the order its worker uses:
`KubernetesWorkerJobConfiguration.from_template_and_values` fills the pool's base job template
(infra/kubernetes/base-job-template.json) with the job variables, then `prepare_for_flow_run`
adds what the worker adds for a run (Prefect env, labels, the `flow-run execute` command, the
generated name). No pre-processing of our own stands in between, so what is printed is what the
stock worker sends to the API server.

No Prefect server is needed: a placeholder PREFECT_API_URL is set before Prefect is imported, so
no ephemeral server starts, and the placeholder is what the Job's PREFECT_API_URL shows unless
`--api-url` names the one the worker will use. Values of environment variables whose names look
secret (PREFECT_API_KEY, ...) are masked in the output; Kubernetes Secret references are kept.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import json
import os
import sys
import uuid
from pathlib import Path
from typing import Any

import yaml

from plantcad_flows import REPO_ROOT
from plantcad_flows.secrets import mask_env_entries

TEMPLATE_PATH = REPO_ROOT / "infra" / "kubernetes" / "base-job-template.json"
PREFECT_YAML = REPO_ROOT / "prefect.yaml"
PLACEHOLDER_API_URL = "http://prefect-server.prefect.svc.cluster.local:4200/api"


def load_template(path: str | Path = TEMPLATE_PATH) -> dict[str, Any]:
    return json.loads(Path(path).read_text())


def deployment_job_variables(name: str, prefect_yaml: str | Path = PREFECT_YAML) -> dict[str, Any]:
    """The job variables a deployment in prefect.yaml sets (the worker merges run ones on top)."""
    spec = yaml.safe_load(Path(prefect_yaml).read_text())
    for dep in spec.get("deployments", []):
        if dep.get("name") == name:
            return dict((dep.get("work_pool") or {}).get("job_variables") or {})
    names = [d.get("name") for d in spec.get("deployments", [])]
    raise SystemExit(f"--deployment={name!r}: no such deployment in {prefect_yaml} (have {names})")


def _ensure_offline_prefect(api_url: str | None) -> None:
    # Must run before the first `import prefect`: without an API URL Prefect would start an
    # ephemeral server on the first client call.
    os.environ["PREFECT_API_URL"] = api_url or os.environ.get("PREFECT_API_URL") or PLACEHOLDER_API_URL


async def _render(template: dict[str, Any], job_variables: dict[str, Any], flow_run_name: str) -> dict:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.objects import Flow, FlowRun, WorkPool
    from prefect_kubernetes.worker import KubernetesWorkerJobConfiguration

    async with get_client() as client:  # only used if the template references blocks/variables
        config = await KubernetesWorkerJobConfiguration.from_template_and_values(
            base_job_template=template, values=job_variables, client=client
        )
    flow = Flow(id=uuid.uuid4(), name="zero-shot-eval")
    run = FlowRun(id=uuid.uuid4(), name=flow_run_name, flow_id=flow.id)
    pool = WorkPool(name="kubernetes", type="kubernetes", base_job_template=template)
    config.prepare_for_flow_run(
        flow_run=run, flow=flow, work_pool=pool, worker_name="preview-job", worker_id=None
    )
    return config.job_manifest


def mask_secret_values(manifest: dict[str, Any]) -> dict[str, Any]:
    """Replace literal values of secret-looking env vars; `valueFrom` references stay."""
    for container in manifest["spec"]["template"]["spec"].get("containers", []):
        mask_env_entries(container.get("env"))
    return manifest


def render_job(
    job_variables: dict[str, Any],
    template: dict[str, Any] | None = None,
    flow_run_name: str = "preview-run",
    api_url: str | None = None,
) -> dict[str, Any]:
    """The Job manifest (a dict) the kubernetes worker would create for these job variables.

    Args:
        job_variables: as given to `prefect deployment run --job-variable` (merged over the
            deployment's own, if you want those: see `deployment_job_variables`).
        template: the pool's base job template; default infra/kubernetes/base-job-template.json.
        flow_run_name: shown in labels and the generated name.
        api_url: the PREFECT_API_URL the worker would pass on.
    """
    _ensure_offline_prefect(api_url)
    template = template if template is not None else load_template()
    manifest = asyncio.run(_render(template, dict(job_variables), flow_run_name))
    return mask_secret_values(manifest)


def _parse_json_arg(text: str) -> dict[str, Any]:
    raw = Path(text[1:]).read_text() if text.startswith("@") else text
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as e:
        raise SystemExit(f"--job-variables={text!r}: not JSON ({e.msg} at char {e.pos})") from None
    if not isinstance(value, dict):
        raise SystemExit(f"--job-variables={text!r}: must be a JSON object")
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="plantcad-flows preview-job",
        description="Print, as YAML, the Kubernetes Job the worker would submit.",
    )
    parser.add_argument("--job-variables", default="{}", help="JSON object, or @file.json")
    parser.add_argument("--deployment", help="start from this prefect.yaml deployment's job variables")
    parser.add_argument("--template", default=str(TEMPLATE_PATH), help="base job template JSON")
    parser.add_argument("--api-url", help="PREFECT_API_URL the worker will pass to the Job")
    parser.add_argument("--flow-run-name", default="preview-run")
    parser.add_argument(
        "--validate",
        metavar="K8S_VERSION",
        help="also validate with kubernetes-validate (strict) against this Kubernetes version",
    )
    args = parser.parse_args(argv)

    variables = deployment_job_variables(args.deployment) if args.deployment else {}
    variables.update(_parse_json_arg(args.job_variables))
    manifest = render_job(variables, load_template(args.template), args.flow_run_name, api_url=args.api_url)
    sys.stdout.write(yaml.safe_dump(manifest, sort_keys=False))
    if args.validate:
        problems = validate_manifest(manifest, args.validate)
        for p in problems:
            print(f"invalid: {p}", file=sys.stderr)
        return 1 if problems else 0
    return 0


# The stock worker insists on `parallelism`/`completions` inside the pod template (its
# `_validate_job_manifest`), where the API server drops them as unknown fields with a warning.
# Strict schema validation would reject them, so they are removed from a copy before validating.
_POD_FIELDS_THE_SERVER_DROPS = ("parallelism", "completions")


def validate_manifest(manifest: dict[str, Any], k8s_version: str) -> list[str]:
    """Strict OpenAPI validation of the Job; returns the problems (empty when valid)."""

    import kubernetes_validate

    checked = copy.deepcopy(manifest)
    pod_spec = checked["spec"]["template"]["spec"]
    for key in _POD_FIELDS_THE_SERVER_DROPS:
        pod_spec.pop(key, None)
    try:
        kubernetes_validate.validate(checked, k8s_version, strict=True)
    except kubernetes_validate.ValidationError as e:
        return [f"{'.'.join(str(p) for p in e.path)}: {e.message}"]
    return []


if __name__ == "__main__":
    raise SystemExit(main())
