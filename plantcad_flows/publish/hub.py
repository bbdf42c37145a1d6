"""The one module that talks to the Hugging Face hub: publish a run's bundle in one commit.

1. create the repository if it does not exist (`private` only applies then);
2. ask the repo, at its current commit, what it holds at every path the publish would write
   (`paths-info`: git blob id, LFS sha256) and under the run's folder (tree listing), and read
   its run index;
3. merge the run into the index and render the card (`card.py`);
4. send only what differs (`changes.py`), as one commit on top of the commit read (the hub
   refuses it if the branch moved meanwhile); when nothing differs, no commit.

The token is an argument, resolved by the caller at run time (`HF_TOKEN` or a Prefect Secret
block); it goes into request headers only and into nothing this module returns or logs. The
endpoint is `HF_ENDPOINT`, read when a publish starts.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

from pydantic import BaseModel

from plantcad_flows.config import PublishConfig
from plantcad_flows.publish.bundle import RunBundle
from plantcad_flows.publish.card import CARD, INDEX, index_bytes, merge, read_index, render_card, run_entry
from plantcad_flows.publish.changes import Changes, RemoteFile, plan_changes

log = logging.getLogger(__name__)
PATHS_INFO_CHUNK = 100  # paths per paths-info request


class PublishReport(BaseModel):
    """What a publish did; holds no secret (it is logged, returned and shown as an artifact)."""

    repo: str
    repo_type: str
    run: str
    folder: str
    commit: str | None  # None: the repo already held every file
    commit_url: str | None = None
    uploaded: list[str] = []
    deleted: list[str] = []
    unchanged: int = 0

    def line(self) -> str:
        where = f"{self.repo_type} {self.repo}/{self.folder}"
        if self.commit is None:
            return f"run {self.run}: nothing changed in {where} ({self.unchanged} file(s) already there); no commit"
        return (
            f"run {self.run} published to {where}: {len(self.uploaded)} file(s) sent, "
            f"{len(self.deleted)} deleted, {self.unchanged} unchanged; commit {self.commit[:12]}"
        )

    def markdown(self) -> str:
        lines = [f"# Published: {self.repo}", "", self.line(), ""]
        if self.commit_url:
            lines += [f"[the commit]({self.commit_url})", ""]
        lines += [f"* `{p}`" for p in self.uploaded]
        lines += [f"* deleted `{p}`" for p in self.deleted]
        return "\n".join(lines) + "\n"


def _api(token: str):
    from huggingface_hub import HfApi

    return HfApi(endpoint=os.environ.get("HF_ENDPOINT") or None, token=token)


def _remote_files(api, target: PublishConfig, paths: list[str], revision: str) -> dict[str, RemoteFile]:
    from huggingface_hub.hf_api import RepoFile

    out: dict[str, RemoteFile] = {}
    for i in range(0, len(paths), PATHS_INFO_CHUNK):
        chunk = paths[i : i + PATHS_INFO_CHUNK]
        for entry in api.get_paths_info(target.repo, chunk, repo_type=target.repo_type, revision=revision):
            if isinstance(entry, RepoFile):
                sha256 = entry.lfs.sha256 if entry.lfs is not None else None
                out[entry.path] = RemoteFile(entry.path, entry.blob_id, sha256)
    return out


def _folder_listing(api, target: PublishConfig, folder: str, revision: str) -> list[str]:
    from huggingface_hub.errors import EntryNotFoundError
    from huggingface_hub.hf_api import RepoFile

    try:
        tree = api.list_repo_tree(
            target.repo, path_in_repo=folder, recursive=True, repo_type=target.repo_type
        )
        return sorted(e.path for e in tree if isinstance(e, RepoFile))
    except EntryNotFoundError:
        return []


def _read_file(api, target: PublishConfig, path: str, revision: str) -> bytes:
    with tempfile.TemporaryDirectory(prefix="plantcad-publish-") as tmp:
        local = api.hf_hub_download(
            target.repo, path, repo_type=target.repo_type, revision=revision, cache_dir=tmp
        )
        return Path(local).read_bytes()


def publish_run(bundle: RunBundle, target: PublishConfig, token: str) -> PublishReport:
    """Put `bundle` into `target.repo` under its folder, sending only what changed, in one commit.

    Raises:
        ValidationError: the folder template names what this run cannot fill, or the repo's run
            index is unreadable (both before anything is sent).
        huggingface_hub.errors.HfHubHTTPError: the hub refused a request.
    """
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete

    folder = bundle.folder(target.path_in_repo)
    api = _api(token)
    api.create_repo(target.repo, repo_type=target.repo_type, private=target.private, exist_ok=True)

    # every read is of one commit, and the commit is made on top of it: a publish that raced
    # another (two runs merging the index at once) is refused by the hub, and retried
    head = api.repo_info(target.repo, repo_type=target.repo_type).sha
    run_files = {f"{folder}/{name}": data for name, data in bundle.files.items()}
    remote = _remote_files(api, target, sorted([*run_files, INDEX, CARD]), head)
    index = read_index(_read_file(api, target, INDEX, head) if INDEX in remote else None)
    index = merge(index, run_entry(bundle, folder))
    files = run_files | {INDEX: index_bytes(index), CARD: render_card(index, target.repo).encode()}
    changes: Changes = plan_changes(files, remote, _folder_listing(api, target, folder, head), folder)
    report = {
        "repo": target.repo,
        "repo_type": target.repo_type,
        "run": bundle.run,
        "folder": folder,
        "unchanged": changes.unchanged,
    }
    if changes.empty:
        return PublishReport(commit=None, **report)

    operations = [CommitOperationAdd(path_in_repo=p, path_or_fileobj=files[p]) for p in changes.upload]
    operations += [CommitOperationDelete(path_in_repo=p) for p in changes.delete]
    info = api.create_commit(
        target.repo,
        operations,
        commit_message=f"Publish run {bundle.run} to {folder}",
        commit_description=(
            f"plantcad-flows publish: {len(changes.upload)} file(s) added or changed, "
            f"{len(changes.delete)} deleted, {changes.unchanged} unchanged."
        ),
        repo_type=target.repo_type,
        parent_commit=head,
    )
    return PublishReport(
        commit=info.oid, commit_url=info.commit_url, uploaded=changes.upload, deleted=changes.delete, **report
    )
