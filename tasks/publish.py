"""The end of a run whose config has a `publish:` section: put its results on the Hugging Face hub.

The token is resolved here, in the task, when it runs: `HF_TOKEN` (or `HUGGING_FACE_HUB_TOKEN`)
from the worker's environment, else the Prefect Secret block `publish.token_secret` names. It
is passed to the core's `publish_run` and to nothing else: not the task's parameters (the UI
shows them), not its result, its logs or its artifact. A hub error is retried like any transient
failure; a missing token is bad input and fails at once.
"""

from __future__ import annotations

from typing import Any

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.blocks.system import Secret
from prefect.cache_policies import NO_CACHE

from plantcad_flows.config import PublishConfig
from plantcad_flows.errors import ValidationError
from plantcad_flows.io.remote import hf_token
from plantcad_flows.publish.bundle import collect_run
from plantcad_flows.publish.hub import PublishReport, publish_run
from plantcad_flows.results.report import artifact_key
from tasks.policy import RETRY_OPTIONS

_OPTIONS: dict[str, Any] = {"cache_policy": NO_CACHE, "persist_result": False, **RETRY_OPTIONS}


def secret_token(block: str | None, field: str = "publish.token_secret") -> str:
    """The hub token: the environment's, else the value of the Prefect Secret block `block`.

    Raises:
        ValidationError: naming `field`: neither is there, or the block is missing or empty.
    """
    token = hf_token()
    if token:
        return token
    if not block:
        raise ValidationError(
            field, None, "no Hugging Face token: HF_TOKEN is not set and no Secret block is named"
        )

    try:
        value = Secret.load(block).get()
    except ValueError:
        raise ValidationError(field, block, "no such Prefect Secret block") from None
    if not isinstance(value, str) or not value:
        raise ValidationError(field, block, "the Secret block holds no token string")
    return value


@task(name="publish-results", **_OPTIONS)
def publish_results(prefix: str, run_name: str, target: PublishConfig, scope: str) -> PublishReport:
    """Publish the run `run_name` under `prefix` to `target.repo`; log and show what was sent."""
    bundle = collect_run(prefix, run_name)
    report = publish_run(bundle, target, secret_token(target.token_secret))
    get_run_logger().info("%s", report.line())
    create_markdown_artifact(
        key=artifact_key("publish", scope),
        markdown=report.markdown(),
        description=f"what this run published to the hub ({target.repo})",
    )
    return report
