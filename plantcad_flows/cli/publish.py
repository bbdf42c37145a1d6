"""`plantcad-flows publish`: put one finished run's results on the Hugging Face hub.

    plantcad-flows publish --repo ORG/NAME [--repo-type dataset|model] [--path-in-repo TEMPLATE]
                           [--private] [--token-secret BLOCK] --prefix P [--run R]

Bad input (an unknown repo type, a repo id that is not ORG/NAME, a folder template with an
unknown placeholder, no token, a run that does not exist) exits 2 with one line naming the flag
and the value, before any request leaves this machine. The token comes from `HF_TOKEN` (or
`HUGGING_FACE_HUB_TOKEN`), else from the Prefect Secret block `--token-secret` names (read
through the Prefect API, only then); it is never printed. Publishing the same run again sends
nothing and makes no commit.
"""

from __future__ import annotations

import argparse
import sys

from plantcad_flows.config import (
    PublishConfig,
    check_block_name,
    check_path_template,
    check_repo_id,
    check_repo_type,
)
from plantcad_flows.errors import PlantCADError, ValidationError
from plantcad_flows.io.remote import hf_token

DEFAULT_PATH = "runs/{run}"
_NETWORK_ERRORS = ("huggingface_hub", "httpx", "httpx2", "httpcore")


def _fail(line: str, status: int = 2) -> int:
    print(line, file=sys.stderr)
    return status


def cmd_publish(args: argparse.Namespace) -> int:
    try:
        target = PublishConfig(
            repo=check_repo_id("--repo", args.repo),
            repo_type=check_repo_type("--repo-type", args.repo_type),
            path_in_repo=check_path_template("--path-in-repo", args.path_in_repo),
            private=args.private,
            token_secret=check_block_name("--token-secret", args.token_secret),
        )
        token = hf_token()
        if not token and not target.token_secret:
            raise ValidationError(
                "HF_TOKEN",
                None,
                "no Hugging Face token",
                "set HF_TOKEN, or name a Prefect Secret block with --token-secret",
            )
        from plantcad_flows.publish.bundle import collect_run

        bundle = collect_run(args.prefix, args.run)
        bundle.folder(target.path_in_repo, "--path-in-repo")  # what this run cannot fill fails here
    except ValidationError as e:
        return _fail(str(e))
    except PlantCADError as e:  # a cell's predictions that do not match their record
        return _fail(f"publish: {e}", 1)

    if not token:
        from tasks.publish import secret_token

        try:
            token = secret_token(target.token_secret, field="--token-secret")
        except ValidationError as e:
            return _fail(str(e))
    from plantcad_flows.publish.hub import publish_run

    try:
        report = publish_run(bundle, target, token)
    except ValidationError as e:  # the repo's run index is not one this version reads
        return _fail(f"publish: {e}", 1)
    except Exception as e:  # the hub's refusal, in one line (no headers: the token is not in it)
        if type(e).__module__.split(".")[0] in _NETWORK_ERRORS or isinstance(e, OSError):
            first = " ".join(str(e).split("\n")[0].split())
            return _fail(f"publish to {target.repo} failed: {type(e).__name__}: {first}", 1)
        raise
    print(report.line())
    for path in report.uploaded:
        print(f"  + {path}")
    for path in report.deleted:
        print(f"  - {path}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "publish",
        help="upload a run's results, predictions and a dataset card to the Hugging Face hub",
        description="Upload one run (results, leaderboard files, per-cell predictions, config, identities) "
        "and the repo's card in one commit; files the repo already holds are not sent again.",
    )
    p.add_argument("--repo", required=True, metavar="ORG/NAME", help="the hub repository")
    p.add_argument("--repo-type", default="dataset", metavar="TYPE", help="dataset (default) or model")
    p.add_argument(
        "--path-in-repo",
        default=DEFAULT_PATH,
        metavar="TEMPLATE",
        help="the run's folder; placeholders {run}, {plan}, {step}, {seed}, {max_size} "
        f"(default {DEFAULT_PATH}; e.g. results/step-{{step}}/leaderboard-seed{{seed}}-n{{max_size}})",
    )
    p.add_argument(
        "--private", action="store_true", help="create the repository private if it does not exist"
    )
    p.add_argument(
        "--token-secret",
        metavar="BLOCK",
        help="Prefect Secret block holding the token, when HF_TOKEN is not set",
    )
    p.add_argument("--prefix", required=True, help="the storage prefix the run wrote to")
    p.add_argument("--run", help="the run (flow run name) to publish; default: the newest under the prefix")
    p.set_defaults(func=cmd_publish)
