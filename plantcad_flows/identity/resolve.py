"""Resolving a config once, at plan time: every model and split to its identity, every
`checkpoints:` entry to its complete checkpoints.

The result pins what workers load: a hub model's or dataset's `revision` becomes the commit sha
it resolved to, so every shard of a run reads the same commit even if the branch moves mid-run.
Nothing here loads a model or reads a split's rows; each distinct location and revision is
resolved once per call (the hub asked once, a file hashed once), however many names use it.
"""

from __future__ import annotations

import os

from pydantic import BaseModel, ConfigDict

from plantcad_flows.config import EvalConfig, ModelConfig, SplitConfig
from plantcad_flows.errors import StorageError, ValidationError
from plantcad_flows.identity.checkpoints import Discovery, discover
from plantcad_flows.identity.content import (
    local_data_fingerprint,
    local_model_fingerprint,
    remote_fingerprint,
)
from plantcad_flows.identity.records import Identity
from plantcad_flows.identity.revisions import git_sha, hub_sha
from plantcad_flows.io.remote import is_local
from plantcad_flows.io.retry import with_retries


class ResolvedModel(BaseModel):
    model_config = ConfigDict(frozen=True)
    model: ModelConfig  # revision pinned to the resolved commit for hub models
    identity: Identity


class ResolvedSplit(BaseModel):
    model_config = ConfigDict(frozen=True)
    split: SplitConfig  # revision pinned to the resolved commit for dataset repos
    identity: Identity


class Resolution(BaseModel):
    """A config's models (explicit ones first, then discovered checkpoints) and splits, each
    with its identity, and what checkpoint discovery found and skipped."""

    model_config = ConfigDict(frozen=True)
    models: list[ResolvedModel]
    splits: list[ResolvedSplit]
    discoveries: list[Discovery] = []


def _pinned(declared, identity: Identity):
    """`declared` (a model or split config) loading exactly the commit its revision resolved to,
    so that every worker reads the same commit even if the branch moves during the run."""
    if identity.kind in ("hub", "git") and identity.revision != declared.revision:
        return declared.model_copy(update={"revision": identity.revision})
    return declared


def _looks_like_path(path: str) -> bool:
    """A hub id is `name` or `org/name`; anything else is meant as a directory."""
    return path.startswith((os.sep, ".", "~")) or path.count("/") > 1


def resolve_model(model: ModelConfig) -> ResolvedModel:
    """A model's identity: a local directory's fingerprint, a remote directory's ETags, or the
    commit its hub revision points at (a 40-hex revision is used without a network call).

    Raises:
        ValidationError: naming `models[NAME].path` (a missing directory) or
        `models[NAME].revision` (a revision the hub cannot resolve, or one given for a
        directory, where it would do nothing).
    """
    where = os.path.join(model.path, model.subfolder) if model.subfolder else model.path
    if model.revision is not None and (not is_local(model.path) or os.path.isdir(model.path)):
        # ignored for a directory, local or remote: the user would believe they pinned something
        kind = "local" if is_local(model.path) else "remote"
        raise ValidationError(
            f"models[{model.label}].revision",
            model.revision,
            f"{model.path} is a {kind} directory, identified by its content; a revision applies to hub ids only",
            "remove it",
        )
    if not is_local(model.path):
        try:
            fingerprint = with_retries(lambda: remote_fingerprint(where, suffix=None), f"list {where}")
        except FileNotFoundError:
            raise ValidationError(f"models[{model.label}].path", model.path, f"nothing at {where}") from None
        except Exception as e:
            raise StorageError(f"models[{model.label}].path={model.path!r}: cannot list: {e}") from e
        return ResolvedModel(model=model, identity=Identity(kind="remote", fingerprint=fingerprint))
    if os.path.isdir(model.path):
        fingerprint = local_model_fingerprint(model.path, model.subfolder)
        if fingerprint is None:
            raise ValidationError(
                f"models[{model.label}].subfolder", model.subfolder, f"no such directory in {model.path}"
            )
        return ResolvedModel(model=model, identity=Identity(kind="local", fingerprint=fingerprint))
    if _looks_like_path(model.path):
        raise ValidationError(
            f"models[{model.label}].path", model.path, "no such directory (nor a hub repo id)"
        )
    sha = hub_sha(model.path, model.revision, "model", f"models[{model.label}].revision")
    identity = Identity(kind="hub", revision=sha, requested=model.revision)
    return ResolvedModel(model=_pinned(model, identity), identity=identity)


def resolve_split(split: SplitConfig) -> ResolvedSplit:
    """A split's identity: the content of its parquet files (local: size and sha256; remote:
    ETag and size), or the commit of its dataset repo (hub, or a local git clone at `revision`;
    a local dataset directory without a revision is fingerprinted like files).

    Raises:
        ValidationError: naming `splits[TASK/SPLIT].path` or `.revision`.
    """
    field = f"splits[{split.key}]"
    files = split.family.content_files(split)
    if files:  # the family names the files whose content is the data (a variant set's VCF + FASTA)
        return ResolvedSplit(split=split, identity=_files_identity(files))
    if split.path:
        try:
            if is_local(split.path):
                fp = local_data_fingerprint(split.path)
                return ResolvedSplit(split=split, identity=Identity(kind="local", fingerprint=fp))
            fp = with_retries(lambda: remote_fingerprint(split.path), f"list {split.path}")
            return ResolvedSplit(split=split, identity=Identity(kind="remote", fingerprint=fp))
        except FileNotFoundError as e:
            raise ValidationError(f"{field}.path", split.path, str(e).split(":")[0]) from None
        except Exception as e:
            raise StorageError(f"{field}.path={split.path!r}: cannot list: {e}") from e
    if os.path.isdir(split.repo_id):
        if split.revision is None:
            fp = local_data_fingerprint(split.repo_id, suffix=None)
            return ResolvedSplit(split=split, identity=Identity(kind="local", fingerprint=fp))
        sha = git_sha(split.repo_id, split.revision, f"{field}.revision")
        identity = Identity(kind="git", revision=sha, requested=split.revision)
    else:
        sha = hub_sha(split.repo_id, split.revision, "dataset", f"{field}.revision")
        identity = Identity(kind="hub", revision=sha, requested=split.revision)
    return ResolvedSplit(split=_pinned(split, identity), identity=identity)


def _files_identity(files: dict[str, str]) -> Identity:
    """The identity of a split whose family names its files (field -> location): their content
    (local: sha256; remote: the store's ETag/size or blob id), whatever their paths."""
    parts = []
    for field, url in files.items():
        try:
            if is_local(url):
                parts.append(local_data_fingerprint(url, suffix=None))
            else:
                parts.append(with_retries(lambda url=url: remote_fingerprint(url, None), f"list {url}"))
        except FileNotFoundError as e:
            raise ValidationError(field, url, str(e).split(":")[0]) from None
    kind = "local" if all(is_local(u) for u in files.values()) else "remote"
    return Identity(kind=kind, fingerprint="+".join(parts))


def _check_names(config: EvalConfig, discoveries: list[Discovery]) -> None:
    taken = {m.label: "models" for m in config.models}
    for d in discoveries:
        for c in d.found:
            if c.model.label in taken:
                raise ValidationError(
                    f"checkpoints[{d.run}].name",
                    d.run,
                    f"{c.model.label} is also a model of {taken[c.model.label]}",
                )
            taken[c.model.label] = f"checkpoints[{d.run}]"


def resolve(config: EvalConfig) -> Resolution:
    """Every model (explicit, then discovered) and split of `config` with its identity.

    Raises:
        ValidationError: the first model, checkpoint run or split that cannot be resolved, naming
        its field and value; before anything is scored.
        StorageError: a remote location that could not be listed.
    """
    seen: dict[tuple, Identity] = {}  # one resolution per distinct location and revision

    def identity(key: tuple, make) -> Identity:
        if key not in seen:
            seen[key] = make().identity
        return seen[key]

    models = []
    for m in config.models:
        found = identity(("model", m.path, m.subfolder, m.revision), lambda m=m: resolve_model(m))
        models.append(ResolvedModel(model=_pinned(m, found), identity=found))
    discoveries = [discover(entry) for entry in config.checkpoints]
    _check_names(config, discoveries)
    for d in discoveries:
        models += [ResolvedModel(model=c.model, identity=c.identity) for c in d.found]
    splits = []
    for s in config.splits:
        files = tuple(s.family.content_files(s).values())
        found = identity(("split", s.path, s.repo_id, s.revision, files), lambda s=s: resolve_split(s))
        splits.append(ResolvedSplit(split=_pinned(s, found), identity=found))
    return Resolution(models=models, splits=splits, discoveries=discoveries)
