"""A local git clone of a dataset repo, at the commit a split's `revision` resolved to.

`datasets.load_dataset(directory, ...)` ignores `revision` for a local directory (checked with
datasets 5.2: it reads the working tree whatever the revision), so a clone of the hub dataset
would silently serve whatever is checked out. Instead the commit's files are materialised once
per node (`git archive`, then Git LFS pointers replaced by their objects from the clone's
`.git/lfs/objects`) into a cache directory named by the clone and the commit, and loaded from
there through the same `load_dataset(directory, name=task, split=split)` call. The clone itself
is only read.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import tarfile
from pathlib import Path

from filelock import FileLock

from plantcad_flows.data.node_cache import DEFAULT_CACHE_ROOT
from plantcad_flows.errors import ValidationError

LFS_POINTER = b"version https://git-lfs.github.com/spec/v1"
_OID = re.compile(rb"^oid sha256:([0-9a-f]{64})$", re.M)


def _git(repo: str, *args: str) -> bytes:
    return subprocess.run(["git", "-C", repo, *args], capture_output=True, check=True, timeout=600).stdout


def _replace_lfs_pointers(tree: Path, git_dir: Path, field: str) -> None:
    """Git LFS keeps large files out of git: the archive holds small pointer files, and the
    clone keeps their content under `.git/lfs/objects/aa/bb/<sha256>`."""
    for path in tree.rglob("*"):
        if not path.is_file() or path.stat().st_size > 1024:
            continue
        head = path.read_bytes()
        if not head.startswith(LFS_POINTER):
            continue
        m = _OID.search(head)
        oid = m.group(1).decode() if m else ""
        obj = git_dir / "lfs" / "objects" / oid[:2] / oid[2:4] / oid
        if not m or not obj.is_file():
            raise ValidationError(
                field, str(path.relative_to(tree)), "Git LFS object not in the clone (run `git lfs fetch`)"
            )
        shutil.copyfile(obj, path)


def checkout(repo: str, sha: str, field: str, cache_root: str | os.PathLike | None = None) -> Path:
    """A directory holding the files of `repo` at commit `sha`, made at most once per node.

    Args:
        repo: a local git clone of a dataset repo.
        sha: a full commit sha (resolved at plan time).
        field: the config field to name in errors.
        cache_root: node-local cache; default `~/.cache/plantcad-flows/node-cache/..`.

    Raises:
        ValidationError: the commit cannot be read or an LFS object is missing.
    """
    root = Path(cache_root or DEFAULT_CACHE_ROOT.parent / "dataset-repos").expanduser()
    clone = hashlib.sha256(os.path.realpath(repo).encode()).hexdigest()[:12]
    dest = root / f"{Path(repo).name}-{clone}-{sha}"
    if dest.exists():
        return dest
    root.mkdir(parents=True, exist_ok=True)
    with FileLock(str(dest) + ".lock"):
        if dest.exists():
            return dest
        tmp = root / f".{dest.name}.partial-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            git_dir = Path(_git(repo, "rev-parse", "--absolute-git-dir").decode().strip())
            _git(repo, "cat-file", "-e", f"{sha}^{{commit}}")
        except (OSError, subprocess.CalledProcessError) as e:
            err = (getattr(e, "stderr", b"") or b"").decode().strip()
            raise ValidationError(field, sha, f"cannot read it from {repo}: {err or e}") from None
        # streamed: a dataset without LFS may be large
        proc = subprocess.Popen(
            ["git", "-C", repo, "archive", "--format=tar", sha],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        with tarfile.open(fileobj=proc.stdout, mode="r|") as tar:
            tar.extractall(tmp, filter="data")
        if proc.wait(timeout=600) != 0:
            raise ValidationError(
                field, sha, f"git archive failed in {repo}: {proc.stderr.read().decode().strip()}"
            )
        _replace_lfs_pointers(tmp, git_dir, field)
        os.replace(tmp, dest)
    return dest
