"""Checkpoint discovery: the complete checkpoints a training run has written so far.

A `checkpoints:` entry names a run directory (local or `s3://`, listed through fsspec) or a hub
repo (its subfolders through `list_repo_tree`, or its branches or tags through `list_repo_refs`,
resolved to their commits). Every checkpoint whose name matches `pattern` is a candidate; its step
is the last number in its name. `every: K` keeps steps that are multiples of K (a rule that does
not change as new checkpoints arrive), then `last: K` keeps the K latest complete ones.

Complete means a `config.json` and weights (`*.safetensors` or `pytorch_model*.bin`); where an
index file lists weight shards, all of them; and, for local files (written in place, unlike
object stores, which show an object only once it is whole), a safetensors file as long as its
header says. A half-written checkpoint is skipped and reported, never scored.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import struct
from collections.abc import Callable
from dataclasses import dataclass, field

from plantcad_flows.config import CheckpointsConfig, ModelConfig
from plantcad_flows.errors import ValidationError
from plantcad_flows.identity.content import listing_fingerprint, local_model_fingerprint
from plantcad_flows.identity.records import Identity
from plantcad_flows.identity.revisions import hub_error, hub_sha
from plantcad_flows.io.remote import filesystem, is_local
from plantcad_flows.io.retry import with_retries

CONFIG = "config.json"
INDEXES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
_STEP = re.compile(r"\d+")
Reader = Callable[[str], bytes]  # file name -> its bytes (index files, safetensors headers)


@dataclass(frozen=True)
class Checkpoint:
    """One candidate: scored when `model` is set, else skipped for `problem`."""

    name: str
    step: int | None
    model: ModelConfig | None = None
    identity: Identity | None = None
    problem: str | None = None


@dataclass
class Discovery:
    """What one `checkpoints:` entry found: complete checkpoints (oldest first), skipped ones,
    and how many `every` / `last` left out."""

    run: str
    source: str
    found: list[Checkpoint] = field(default_factory=list)
    skipped: list[Checkpoint] = field(default_factory=list)
    thinned: int = 0


def parse_step(name: str) -> int | None:
    """The step a checkpoint's name carries: its last number (`step-1000`, `checkpoint-500`)."""
    numbers = _STEP.findall(name)
    return int(numbers[-1]) if numbers else None


def _safetensors_problem(name: str, size: int, read_head: Callable[[int], bytes]) -> str | None:
    """Whether a safetensors file is as long as its header says (a truncated copy is not)."""
    head = read_head(8)
    if len(head) < 8:
        return f"{name} is truncated ({size} bytes)"
    (n,) = struct.unpack("<Q", head)
    try:
        header = json.loads(read_head(8 + n)[8:])
    except ValueError:
        return f"{name} has an unreadable header"
    end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
    if size < 8 + n + end:
        return f"{name} is truncated ({size} of {8 + n + end} bytes)"
    return None


def checkpoint_problem(
    sizes: dict[str, int], read: Reader | None = None, read_head: Callable[[str, int], bytes] | None = None
) -> str | None:
    """Why a checkpoint with these files (name -> size) is incomplete, or None when complete.

    `read` reads index files (their listed shards must all be there); `read_head(name, n)` reads
    a file's first n bytes, to check a safetensors file's length against its header.
    """
    if CONFIG not in sizes:
        return "incomplete: no config.json"
    weights = [n for n in sizes if n.endswith(".safetensors") or fnmatch.fnmatch(n, "pytorch_model*.bin")]
    if not weights:
        return "incomplete: no weights (*.safetensors or pytorch_model*.bin)"
    for index in INDEXES:
        if index in sizes and read is not None:
            try:
                shards = set(json.loads(read(index))["weight_map"].values())
            except (ValueError, KeyError, TypeError):
                return f"incomplete: unreadable {index}"
            missing = sorted(shards - set(sizes))
            if missing:
                return f"incomplete: {index} lists missing shards {', '.join(missing[:3])}"
    if read_head is not None:
        for name in sorted(n for n in weights if n.endswith(".safetensors")):
            problem = _safetensors_problem(name, sizes[name], lambda k, n=name: read_head(n, k))
            if problem:
                return f"incomplete: {problem}"
    return None


def _thin(entry: CheckpointsConfig, names: list[str], out: Discovery) -> list[tuple[str, int]]:
    """Candidates matching the pattern, with a step, not thinned by `every`; newest first."""
    steps: dict[int, str] = {}
    for name in sorted(n for n in names if fnmatch.fnmatch(n, entry.pattern)):
        step = parse_step(name)
        if step is None:
            out.skipped.append(Checkpoint(name, None, problem="no step number in its name"))
        elif step in steps:
            out.skipped.append(Checkpoint(name, step, problem=f"same step as {steps[step]}"))
        elif entry.every and step % entry.every:
            out.thinned += 1
        else:
            steps[step] = name
    return sorted(((n, s) for s, n in steps.items()), key=lambda c: -c[1])


def _collect(
    entry: CheckpointsConfig,
    candidates: list[tuple[str, int]],
    check: Callable[[str, int], Checkpoint],
    out: Discovery,
) -> Discovery:
    """Check candidates newest first until `last` complete ones are found."""
    for i, (name, step) in enumerate(candidates):
        if entry.last is not None and len(out.found) == entry.last:
            out.thinned += len(candidates) - i
            break
        ckpt = check(name, step)
        (out.found if ckpt.model is not None else out.skipped).append(ckpt)
    out.found.sort(key=lambda c: c.step)
    out.skipped.sort(key=lambda c: (c.step is None, c.step or 0, c.name))
    return out


def _local(entry: CheckpointsConfig, out: Discovery) -> Discovery:
    root = entry.path
    names = [n for n in os.listdir(root) if os.path.isdir(os.path.join(root, n))]

    def check(name: str, step: int) -> Checkpoint:
        d = os.path.join(root, name)
        sizes = {
            f: os.path.getsize(os.path.join(d, f))
            for f in os.listdir(d)
            if os.path.isfile(os.path.join(d, f))
        }

        def read(f: str) -> bytes:
            with open(os.path.join(d, f), "rb") as fh:
                return fh.read()

        def head(f: str, n: int) -> bytes:
            with open(os.path.join(d, f), "rb") as fh:
                return fh.read(n)

        problem = checkpoint_problem(sizes, read, head)
        if problem:
            return Checkpoint(name, step, problem=problem)
        model = entry.model(step, os.path.abspath(d))
        return Checkpoint(name, step, model, Identity(kind="local", fingerprint=local_model_fingerprint(d)))

    return _collect(entry, _thin(entry, names, out), check, out)


def _remote(entry: CheckpointsConfig, out: Discovery) -> Discovery:
    fs, root = filesystem(entry.path)
    scheme = entry.path.split("://", 1)[0]
    listed = {os.path.basename(i["name"].rstrip("/")): i for i in fs.ls(root, detail=True)}
    names = [n for n, i in listed.items() if i.get("type") == "directory"]

    def check(name: str, step: int) -> Checkpoint:
        d = listed[name]["name"].rstrip("/")
        files = {
            os.path.basename(i["name"]): i
            for i in fs.ls(d, detail=True, refresh=True)
            if i.get("type") == "file"
        }

        def read(f: str) -> bytes:
            return fs.cat_file(f"{d}/{f}")

        problem = checkpoint_problem({f: int(i.get("size") or 0) for f, i in files.items()}, read)
        if problem:
            return Checkpoint(name, step, problem=problem)
        model = entry.model(step, f"{scheme}://{d}")
        return Checkpoint(name, step, model, Identity(kind="remote", fingerprint=listing_fingerprint(files)))

    return _collect(entry, _thin(entry, names, out), check, out)


def _hub_call(entry: CheckpointsConfig, what: str, call: Callable):
    try:
        return with_retries(call, f"{what} {entry.path}")
    except Exception as e:
        raise ValidationError(
            f"checkpoints[{entry.label}].path", entry.path, hub_error(e, entry.path, None)
        ) from None


def _hub_files(tree, prefix: str = "") -> dict[str, dict]:
    """Direct children of `prefix` in a hub tree listing, as fsspec-like infos."""
    out = {}
    for item in tree:
        rel = item.path[len(prefix) :] if item.path.startswith(prefix) else None
        if rel and "/" not in rel and hasattr(item, "size") and hasattr(item, "blob_id"):
            lfs = getattr(item, "lfs", None)
            out[rel] = {"size": item.size, "blob_id": item.blob_id, "lfs": getattr(lfs, "sha256", None)}
    return out


def _hub_folders(entry: CheckpointsConfig, out: Discovery) -> Discovery:
    from huggingface_hub import HfApi

    sha = hub_sha(entry.path, entry.revision, "model", f"checkpoints[{entry.label}].revision")
    tree = _hub_call(
        entry, "list", lambda: list(HfApi().list_repo_tree(entry.path, revision=sha, recursive=True))
    )
    names = sorted({t.path.split("/", 1)[0] for t in tree if "/" in t.path})

    def check(name: str, step: int) -> Checkpoint:
        files = _hub_files(tree, f"{name}/")
        problem = checkpoint_problem({f: int(i["size"] or 0) for f, i in files.items()})
        if problem:
            return Checkpoint(name, step, problem=problem)
        model = entry.model(step, entry.path, subfolder=name, revision=sha)
        identity = Identity(
            kind="hub", revision=sha, fingerprint=listing_fingerprint(files), requested=entry.revision
        )
        return Checkpoint(name, step, model, identity)

    return _collect(entry, _thin(entry, names, out), check, out)


def _hub_refs(entry: CheckpointsConfig, out: Discovery) -> Discovery:
    from huggingface_hub import HfApi

    api = HfApi()
    refs = _hub_call(entry, "list refs of", lambda: api.list_repo_refs(entry.path))
    targets = {r.name: r.target_commit for r in (refs.branches if entry.match == "branches" else refs.tags)}

    def check(name: str, step: int) -> Checkpoint:
        sha = targets[name]
        tree = _hub_call(entry, "list", lambda: list(api.list_repo_tree(entry.path, revision=sha)))
        problem = checkpoint_problem({f: int(i["size"] or 0) for f, i in _hub_files(tree).items()})
        if problem:
            return Checkpoint(name, step, problem=problem)
        model = entry.model(step, entry.path, revision=sha)
        return Checkpoint(name, step, model, Identity(kind="hub", revision=sha, requested=name))

    return _collect(entry, _thin(entry, list(targets), out), check, out)


def discover(entry: CheckpointsConfig) -> Discovery:
    """The complete checkpoints of one run, with their models and identities.

    Raises:
        ValidationError: naming `checkpoints[NAME].path` (or `.match`), when the run cannot be
        listed: a missing directory, an unknown hub repo, branches or tags of a non-hub path.
    """
    out = Discovery(run=entry.label, source=entry.path)
    field_ = f"checkpoints[{entry.label}]"
    local = is_local(entry.path)
    if local and os.path.isdir(entry.path):
        kind = "local"
    elif local and (entry.path.startswith((os.sep, ".", "~")) or entry.path.count("/") != 1):
        raise ValidationError(f"{field_}.path", entry.path, "no such directory")
    else:
        kind = "hub" if local else "remote"
    if entry.match != "folders" and kind != "hub":
        raise ValidationError(f"{field_}.match", entry.match, "branches and tags need a hub repo id as path")
    if entry.revision is not None and (kind != "hub" or entry.match != "folders"):
        # a setting that does nothing must not look like a pin
        why = (
            f"a {kind} run directory has no revisions; its checkpoints are identified by content"
            if kind != "hub"
            else f"match: {entry.match} takes each checkpoint's own commit; revision picks the branch only for match: folders"
        )
        raise ValidationError(f"{field_}.revision", entry.revision, why, "remove it")
    if kind == "local":
        return _local(entry, out)
    if kind == "remote":
        try:
            return _remote(entry, out)
        except FileNotFoundError:
            raise ValidationError(f"{field_}.path", entry.path, "no such directory") from None
    return _hub_folders(entry, out) if entry.match == "folders" else _hub_refs(entry, out)
