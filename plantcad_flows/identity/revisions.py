"""Revisions to commit shas: a hub repo's branch, tag or default branch, and a local git
dataset repository's branch, tag or commit.

A 40-hex revision is a commit already and is used as is, without a network call, so a config
with pinned revisions runs offline. Anything that cannot be resolved (offline, unknown repo,
unknown branch, a gated or private repo without a token) is a `ValidationError` naming the
config field and the revision, raised at plan time, before anything is scored.
"""

from __future__ import annotations

import re
import subprocess
from typing import Literal

from plantcad_flows.errors import ValidationError
from plantcad_flows.io.retry import _chain, _is_transport_error, _status, with_retries

SHA_RE = re.compile(r"[0-9a-fA-F]{40}")
RepoType = Literal["model", "dataset"]


def is_sha(revision: str | None) -> bool:
    return bool(revision) and SHA_RE.fullmatch(revision) is not None


def hub_error(exc: BaseException, repo_id: str, revision: str | None) -> str:
    """One line saying why the hub could not resolve `repo_id@revision`."""
    from huggingface_hub.errors import (
        GatedRepoError,
        HFValidationError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    where = f"{repo_id}@{revision}" if revision else f"the default branch of {repo_id}"
    if isinstance(exc, OfflineModeIsEnabled):
        return f"cannot resolve {where}: HF_HUB_OFFLINE is set (pin a 40-hex commit to run offline)"
    if isinstance(exc, RevisionNotFoundError):
        return f"cannot resolve {where}: no such branch, tag or commit"
    if isinstance(exc, GatedRepoError):
        return f"cannot resolve {where}: gated repository (accept its terms and set HF_TOKEN)"
    if isinstance(exc, RepositoryNotFoundError):
        return f"cannot resolve {where}: repository not found (or private: set HF_TOKEN)"
    if isinstance(exc, HFValidationError):
        return f"cannot resolve {where}: not a hub repo id nor an existing directory"
    text = " ".join(str(exc).split())[:200]
    return f"cannot resolve {where}: {type(exc).__name__}: {text}"


def hub_unreachable(exc: BaseException) -> bool:
    """The hub was not asked (offline mode) or did not answer (refused, reset, timed out, DNS)."""
    from huggingface_hub.errors import OfflineModeIsEnabled

    chain = list(_chain(exc))
    if any(_status(e) is not None for e in chain):
        return False  # the hub answered, with an HTTP status
    return any(isinstance(e, OfflineModeIsEnabled) or _is_transport_error(e) for e in chain)


def unreachable_message(exc: BaseException, repo_id: str) -> str:
    from huggingface_hub import constants
    from huggingface_hub.errors import OfflineModeIsEnabled

    way_out = "pin a 40-hex revision of a model in the hub cache, or use a local directory"
    if any(isinstance(e, OfflineModeIsEnabled) for e in _chain(exc)):
        return f"HF_HUB_OFFLINE is set, so the Hugging Face hub is not asked for {repo_id} ({way_out})"
    text = " ".join(str(exc).split())[:160]
    return (
        f"the Hugging Face hub at {constants.ENDPOINT} could not be reached ({type(exc).__name__}: "
        f"{text}); check the network, or {way_out}"
    )


def hub_sha(repo_id: str, revision: str | None, repo_type: RepoType, field: str) -> str:
    """The commit sha `revision` (None = the default branch) of a hub repo points at now.

    Raises:
        ValidationError: `field` = revision, when the hub cannot resolve it.
    """
    if is_sha(revision):
        return revision.lower()
    from huggingface_hub import HfApi

    api = HfApi()
    info = api.model_info if repo_type == "model" else api.dataset_info
    try:
        sha = with_retries(lambda: info(repo_id, revision=revision).sha, f"resolve {repo_id}@{revision}")
    except Exception as e:
        if hub_unreachable(e):
            # say the hub was never reached; with no revision given, it is not the field at fault
            if revision is None:
                field = field.rsplit(".", 1)[0] + (".path" if repo_type == "model" else ".repo_id")
                raise ValidationError(field, repo_id, unreachable_message(e, repo_id)) from None
            raise ValidationError(field, revision, unreachable_message(e, repo_id)) from None
        raise ValidationError(field, revision, hub_error(e, repo_id, revision)) from None
    if not sha:
        raise ValidationError(field, revision, f"the hub reported no commit for {repo_id}")
    return sha


def git_sha(repo_dir: str, revision: str, field: str) -> str:
    """The commit a branch, tag or commit names in a local git repository.

    Raises:
        ValidationError: `field` = revision, when `repo_dir` is not a git repository or does not
        know `revision`.
    """
    try:
        out = subprocess.run(
            ["git", "-C", repo_dir, "rev-parse", "--verify", "--quiet", f"{revision}^{{commit}}"],
            capture_output=True,
            text=True,
            timeout=60,
        )
    except OSError as e:
        raise ValidationError(field, revision, f"cannot run git for {repo_dir}: {e}") from None
    if out.returncode != 0:
        inside = subprocess.run(
            ["git", "-C", repo_dir, "rev-parse", "--git-dir"], capture_output=True, timeout=60
        )
        problem = (
            f"no such branch, tag or commit in the git repository {repo_dir}"
            if inside.returncode == 0
            else f"{repo_dir} is not a git repository, so a revision cannot be checked out"
        )
        raise ValidationError(field, revision, problem)
    return out.stdout.strip()
