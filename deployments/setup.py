"""`plantcad-flows setup`: work pools, blocks, variables and deployments in one idempotent command.

Run it against the server in PREFECT_API_URL, as often as you like:
1. work pools `local` and `lambda` (process) and `kubernetes` (kubernetes, with the base job
   template in infra/kubernetes/base-job-template.json) are created, or updated in place;
2. from the environment (or a `.env` file; the environment wins); every `.env` key (but
   PREFECT_* settings) also becomes a Secret block `dotenv-<key>` for grid cells:
   * HF_TOKEN -> Secret block `hf-token`;
   * AWS_SECRET_ACCESS_KEY (/ AWS_DEFAULT_REGION, AWS_ENDPOINT_URL without credentials) ->
     AwsCredentials block `plantcad-aws`; AWS_ACCESS_KEY_ID -> Secret block
     `plantcad-aws-access-key-id` (AwsCredentials would show it as a public field);
   * PLANTCAD_FLOWS_REPO / PLANTCAD_FLOWS_REF (default: this checkout's origin and commit) ->
     Variables `plantcad_flows_repo` / `plantcad_flows_ref`, which the `lambda` deployment's
     git_clone pull step reads on the worker;
3. the automation `plantcad-eval-regression`: an event trigger on `plantcad.eval.regression` (one
   event per regressed cell, emitted by the zero-shot-eval flow) that calls the webhook in
   PLANTCAD_ALERT_WEBHOOK (kept in the Webhook block `plantcad-alert-webhook`: its URL is a
   secret). Without that variable the automation is created disabled, with a note saying so;
4. `prefect --no-prompt deploy --all` from the repository root.

Secrets stay in blocks. The process pools get *references* to them in their job template's env
(`{{ prefect.blocks.secret.hf-token }}`), which the worker resolves when it starts a run, so no
token is stored in a deployment, shown in the UI or printed here. On Kubernetes the Job reads
them from a Kubernetes Secret instead (see infra/kubernetes/README.md).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import urllib.request
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any

from dotenv import dotenv_values

from plantcad_flows import REPO_ROOT
from plantcad_flows.secrets import SECRET_ENV_NAMES, redact, strip_url_credentials
from plantcad_flows.services.prefect_server import prefect_executable

K8S_TEMPLATE = REPO_ROOT / "infra" / "kubernetes" / "base-job-template.json"
PROCESS_POOLS = ("local", "lambda")
HF_SECRET_BLOCK = "hf-token"
AWS_BLOCK = "plantcad-aws"
AWS_KEY_ID_BLOCK = "plantcad-aws-access-key-id"
ALERT_ENV = "PLANTCAD_ALERT_WEBHOOK"
ALERT_AUTOMATION = "plantcad-eval-regression"
ALERT_WEBHOOK_BLOCK = "plantcad-alert-webhook"
REGRESSION_EVENT = "plantcad.eval.regression"  # plantcad_flows.results.regression.EVENT
# What the webhook receives: JSON naming the regressed cell, with the event's whole payload
# (model, both revisions, task, split, metric, old and new values, the interval).
ALERT_PAYLOAD = (
    '{"event": "{{ event.event }}", "id": "{{ event.id }}", "occurred": "{{ event.occurred }}", '
    '"cell": {{ event.payload.cell | tojson }}, "payload": {{ event.payload | tojson }}}'
)


def read_dotenv(path: Path) -> dict[str, str]:
    """KEY=VALUE lines of a .env file (quotes stripped, comments and `export ` allowed)."""
    if not path.is_file():
        return {}

    return {k: v for k, v in dotenv_values(path).items() if v is not None}


def settings_from(env: Mapping[str, str], dotenv: Mapping[str, str]) -> dict[str, str]:
    merged = dict(dotenv)
    merged.update({k: v for k, v in env.items() if v})
    return merged


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(
            ["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=20, check=True
        ).stdout.strip()
        return out or None
    except (OSError, subprocess.SubprocessError):
        return None


def process_pool_template(blocks: list[str], settings: Mapping[str, str]) -> dict[str, Any]:
    """The stock process template, with env defaults that reference our blocks/variables."""
    from prefect.workers.process import ProcessWorker

    template = ProcessWorker.get_default_base_job_template()
    env: dict[str, str] = {}
    if HF_SECRET_BLOCK in blocks:
        env["HF_TOKEN"] = "{{ prefect.blocks.secret.%s }}" % HF_SECRET_BLOCK
    if AWS_BLOCK in blocks:
        ref = "{{ prefect.blocks.aws-credentials.%s.%%s }}" % AWS_BLOCK
        env["AWS_ACCESS_KEY_ID"] = "{{ prefect.blocks.secret.%s }}" % AWS_KEY_ID_BLOCK
        env["AWS_SECRET_ACCESS_KEY"] = ref % "aws_secret_access_key"
        if settings.get("AWS_DEFAULT_REGION"):
            env["AWS_DEFAULT_REGION"] = ref % "region_name"
    if settings.get("AWS_ENDPOINT_URL"):
        env["AWS_ENDPOINT_URL"] = "{{ prefect.variables.plantcad_s3_endpoint_url }}"
    if env:
        template["variables"]["properties"]["env"]["default"] = env
    return template


async def _upsert_pool(client, name: str, type_: str, template: dict[str, Any]) -> str:
    from prefect.client.schemas.actions import WorkPoolCreate, WorkPoolUpdate
    from prefect.exceptions import ObjectAlreadyExists

    try:
        await client.create_work_pool(WorkPoolCreate(name=name, type=type_, base_job_template=template))
        return "created"
    except ObjectAlreadyExists:
        pool = await client.read_work_pool(name)
        if pool.type != type_:
            raise SystemExit(
                f"work pool {name!r} exists with type {pool.type!r}, expected {type_!r}; "
                f"delete it (prefect work-pool delete {name}) and rerun"
            ) from None
        await client.update_work_pool(name, WorkPoolUpdate(base_job_template=template))
        return "updated"


async def _upsert_variable(client, name: str, value: str) -> None:
    from prefect.client.schemas.actions import VariableCreate, VariableUpdate

    existing = await client.read_variable_by_name(name)
    if existing is None:
        await client.create_variable(VariableCreate(name=name, value=value))
    elif existing.value != value:
        await client.update_variable(VariableUpdate(name=name, value=value))


def save_blocks(settings: Mapping[str, str]) -> list[str]:
    """Create/overwrite the credential blocks the environment provides; returns their names."""
    saved = []
    if settings.get("HF_TOKEN"):
        from prefect.blocks.system import Secret

        Secret(value=settings["HF_TOKEN"]).save(HF_SECRET_BLOCK, overwrite=True)
        saved.append(HF_SECRET_BLOCK)
    if settings.get("AWS_ACCESS_KEY_ID") and settings.get("AWS_SECRET_ACCESS_KEY"):
        from prefect.blocks.system import Secret
        from prefect_aws import AwsCredentials
        from prefect_aws.client_parameters import AwsClientParameters

        # the endpoint is a public field of the block: never with credentials in it
        endpoint = strip_url_credentials(settings.get("AWS_ENDPOINT_URL") or "") or None
        params = AwsClientParameters(endpoint_url=endpoint)
        # AwsCredentials shows aws_access_key_id as a plain (public) field: the key id goes in a
        # Secret block of its own, and the pools' env references that
        Secret(value=settings["AWS_ACCESS_KEY_ID"]).save(AWS_KEY_ID_BLOCK, overwrite=True)
        AwsCredentials(
            aws_secret_access_key=settings["AWS_SECRET_ACCESS_KEY"],
            region_name=settings.get("AWS_DEFAULT_REGION") or None,
            aws_client_parameters=params,
        ).save(AWS_BLOCK, overwrite=True)
        saved += [AWS_KEY_ID_BLOCK, AWS_BLOCK]
    return saved


def save_dotenv_secrets(values: Mapping[str, str]) -> list[str]:
    """Each `.env` value (but PREFECT_* settings) as a Secret block `dotenv-<key>`, which grid
    cells reference by name (plantcad_flows/grid/secret_env.py); returns the block names."""
    from prefect.blocks.system import Secret

    from plantcad_flows.grid.secret_env import block_name, cell_secret_names

    saved = []
    for key in cell_secret_names(values):
        Secret(value=values[key]).save(block_name(key), overwrite=True)
        saved.append(block_name(key))
    return saved


async def configure(settings: Mapping[str, str], blocks: list[str]) -> list[str]:
    """Variables and work pools; returns one line per thing done (never a secret value)."""
    from prefect.client.orchestration import get_client

    lines = []
    variables = {
        # a remote URL often carries a token (https://user:TOKEN@host/...); a Variable is public
        "plantcad_flows_repo": strip_url_credentials(
            settings.get("PLANTCAD_FLOWS_REPO") or _git("remote", "get-url", "origin") or str(REPO_ROOT)
        ),
        "plantcad_flows_ref": settings.get("PLANTCAD_FLOWS_REF") or _git("rev-parse", "HEAD") or "main",
    }
    if settings.get("AWS_ENDPOINT_URL"):
        variables["plantcad_s3_endpoint_url"] = strip_url_credentials(settings["AWS_ENDPOINT_URL"])
    async with get_client() as client:
        for name, value in variables.items():
            await _upsert_variable(client, name, value)
            lines.append(f"variable {name} = {value}")
        for pool in PROCESS_POOLS:
            what = await _upsert_pool(client, pool, "process", process_pool_template(blocks, settings))
            lines.append(f"work pool {pool} (process): {what}")
        k8s = json.loads(K8S_TEMPLATE.read_text())
        what = await _upsert_pool(client, "kubernetes", "kubernetes", k8s)
        lines.append(f"work pool kubernetes (kubernetes): {what}")
    return lines


def alert_automation(settings: Mapping[str, str]) -> list[str]:
    """Create or update the regression alert; returns what was done (never the webhook URL)."""

    from prefect.blocks.webhook import Webhook
    from prefect.client.orchestration import get_client
    from prefect.events.actions import CallWebhook, DoNothing
    from prefect.events.schemas.automations import AutomationCore, EventTrigger, Posture

    url = settings.get(ALERT_ENV)
    trigger = EventTrigger(
        expect={REGRESSION_EVENT},
        match={"prefect.resource.id": "plantcad.cell.*"},
        posture=Posture.Reactive,
        threshold=1,
        within=timedelta(0),
    )
    if url:
        block_id = Webhook(method="POST", url=url, headers={"Content-Type": "application/json"}).save(
            ALERT_WEBHOOK_BLOCK, overwrite=True
        )
        actions = [CallWebhook(block_document_id=block_id, payload=ALERT_PAYLOAD)]
        note = f"calls the webhook in block {ALERT_WEBHOOK_BLOCK} on every {REGRESSION_EVENT} event"
    else:
        actions = [DoNothing()]
        note = (
            f"disabled: {ALERT_ENV} is not set; set it to a webhook URL and run `plantcad-flows setup` again"
        )
    automation = AutomationCore(
        name=ALERT_AUTOMATION,
        description=f"A cell's main metric dropped beyond the bootstrap noise; {note}",
        enabled=bool(url),
        trigger=trigger,
        actions=actions,
    )
    with get_client(sync_client=True) as client:
        existing = client.read_automations_by_name(ALERT_AUTOMATION)
        if existing:
            client.update_automation(existing[0].id, automation)
            for extra in existing[1:]:
                client.delete_automation(extra.id)
            what = "updated"
        else:
            client.create_automation(automation)
            what = "created"
    lines = [f"automation {ALERT_AUTOMATION}: {what}, {'enabled' if url else 'disabled'}"]
    if url:
        lines.insert(0, f"block {ALERT_WEBHOOK_BLOCK}: saved")
    else:
        lines.append(f"note: {note}")
    return lines


def deploy(env: Mapping[str, str], names: list[str] | None) -> int:
    """`prefect --no-prompt deploy` from the repository root; its output passes through masked."""
    cmd = [prefect_executable(), "--no-prompt", "deploy"]
    cmd += [arg for n in names for arg in ("--name", n)] if names else ["--all"]
    proc = subprocess.run(cmd, cwd=REPO_ROOT, env=dict(env), capture_output=True, text=True)
    print(redact(proc.stdout + proc.stderr, env))
    return proc.returncode


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="plantcad-flows setup",
        description="Create/update work pools, blocks, variables and deployments (idempotent).",
    )
    parser.add_argument("--env-file", default=str(REPO_ROOT / ".env"))
    parser.add_argument("--no-deploy", action="store_true", help="pools, blocks and variables only")
    parser.add_argument(
        "--deployment",
        action="append",
        metavar="NAME",
        help="deploy only this one (repeatable; e.g. zero-shot-eval/local)",
    )
    args = parser.parse_args(argv)

    dotenv = read_dotenv(Path(args.env_file))
    settings = settings_from(os.environ, dotenv)
    api_url = settings.get("PREFECT_API_URL")
    if not api_url:
        print(
            "PREFECT_API_URL is not set: point it at your Prefect server "
            "(e.g. export PREFECT_API_URL=http://127.0.0.1:4200/api)",
            file=sys.stderr,
        )
        return 2
    try:
        urllib.request.urlopen(f"{api_url.rstrip('/')}/health", timeout=10).close()
    except OSError as e:
        print(f"PREFECT_API_URL={api_url!r}: server not reachable ({e})", file=sys.stderr)
        return 2
    os.environ["PREFECT_API_URL"] = api_url  # a URL from .env must reach the client below

    blocks = save_blocks(settings)
    for b in blocks + save_dotenv_secrets({k: settings[k] for k in dotenv if k in settings}):
        print(f"block {b}: saved")
    for line in asyncio.run(configure(settings, blocks)):
        print(line)
    for line in alert_automation(settings):
        print(line)
    if args.no_deploy:
        return 0
    child_env = dict(os.environ)
    child_env.update({k: v for k, v in settings.items() if k.startswith("PREFECT_")})
    return deploy(child_env | {k: settings[k] for k in SECRET_ENV_NAMES if k in settings}, args.deployment)


if __name__ == "__main__":
    raise SystemExit(main())
