"""A fake Hugging Face hub at the `huggingface_hub` boundary: `HfApi`'s read methods answered
from dicts, returning the library's own types (`ModelInfo`, `RepoFile`, `GitRefs`) and raising
its own errors (`RepositoryNotFoundError`, `RevisionNotFoundError`, `HfHubHTTPError` with a real
HTTP response), so that everything above the boundary runs unchanged. Every call is recorded.

The hub over the network cannot be reached from the test machines; this is the only thing the
identity tests replace.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import httpx2  # the HTTP client huggingface_hub 2.x builds its errors on
from huggingface_hub import HfApi
from huggingface_hub.errors import (
    EntryNotFoundError,
    HfHubHTTPError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.hf_api import DatasetInfo, GitRefInfo, GitRefs, ModelInfo, RepoFile, RepoFolder


def derived_sha(repo_id: str, revision: str | None) -> str:
    return hashlib.sha1(f"{repo_id}@{revision or 'main'}".encode()).hexdigest()


def http_error(cls: type[HfHubHTTPError], status: int, url: str = "https://huggingface.co/api/x"):
    response = httpx2.Response(status, request=httpx2.Request("GET", url))
    return cls(f"{status} Client Error for url: {url}", response=response)


@dataclass
class FakeHub:
    """`shas[(repo_type, repo_id, revision)]` answers `model_info` / `dataset_info`; unknown
    repos raise RepositoryNotFoundError unless `derive` (then a sha derived from the name)."""

    derive: bool = False
    shas: dict[tuple[str, str, str | None], str] = field(default_factory=dict)
    trees: dict[tuple[str, str], list] = field(default_factory=dict)  # (repo, sha) -> RepoFile/RepoFolder
    refs: dict[str, GitRefs] = field(default_factory=dict)
    failures: list[Exception] = field(default_factory=list)  # raised by the next calls, in order
    # (repo, sha) -> {path: bytes}: what `hf_hub_download` serves (and `list_repo_tree` lists
    # when `trees` has no entry), written under `download_root` as the hub client's cache would
    files: dict[tuple[str, str], dict[str, bytes]] = field(default_factory=dict)
    download_root: Path | None = None
    calls: list[tuple] = field(default_factory=list)

    def set(self, repo_id: str, revision: str | None, sha: str, repo_type: str = "model") -> None:
        self.shas[(repo_type, repo_id, revision)] = sha

    def _sha(self, repo_type: str, repo_id: str, revision: str | None) -> str:
        self.calls.append((f"{repo_type}_info", repo_id, revision))
        if self.failures:
            raise self.failures.pop(0)
        if (repo_type, repo_id, revision) in self.shas:
            return self.shas[(repo_type, repo_id, revision)]
        if any(k[:2] == (repo_type, repo_id) for k in self.shas):
            raise http_error(RevisionNotFoundError, 404)
        if self.derive:
            return derived_sha(repo_id, revision)
        raise http_error(RepositoryNotFoundError, 404)

    def install(self, monkeypatch) -> FakeHub:
        hub = self

        def model_info(self, repo_id, *, revision=None, **kw):
            return ModelInfo(id=repo_id, sha=hub._sha("model", repo_id, revision))

        def dataset_info(self, repo_id, *, revision=None, **kw):
            return DatasetInfo(id=repo_id, sha=hub._sha("dataset", repo_id, revision))

        def list_repo_tree(self, repo_id, path_in_repo=None, *, recursive=False, revision=None, **kw):
            hub.calls.append(("list_repo_tree", repo_id, revision))
            if (repo_id, revision) not in hub.trees and (repo_id, revision) in hub.files:
                served = hub.files[(repo_id, revision)]
                items = [RepoFile(path=n, size=len(b), oid=f"blob-{n}", lfs=None) for n, b in served.items()]
            else:
                items = hub.trees[(repo_id, revision)]
            return iter(items if recursive else [i for i in items if "/" not in i.path])

        def list_repo_refs(self, repo_id, **kw):
            hub.calls.append(("list_repo_refs", repo_id, None))
            if repo_id not in hub.refs:
                raise http_error(RepositoryNotFoundError, 404)
            return hub.refs[repo_id]

        def hf_hub_download(self, repo_id, filename, *, revision=None, **kw):
            hub.calls.append(("hf_hub_download", repo_id, revision, filename))
            served = hub.files.get((repo_id, revision), {})
            if filename not in served:
                raise http_error(EntryNotFoundError, 404)
            out = Path(hub.download_root) / repo_id / str(revision) / filename
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_bytes(served[filename])
            return str(out)

        monkeypatch.setattr(HfApi, "model_info", model_info)
        monkeypatch.setattr(HfApi, "hf_hub_download", hf_hub_download)
        monkeypatch.setattr(HfApi, "dataset_info", dataset_info)
        monkeypatch.setattr(HfApi, "list_repo_tree", list_repo_tree)
        monkeypatch.setattr(HfApi, "list_repo_refs", list_repo_refs)
        return self


def repo_files(folder: str, *, weights: bool = True, blob: str = "b0") -> list:
    """The tree entries of one checkpoint folder ("" = the repo root)."""
    prefix = f"{folder}/" if folder else ""
    items = [RepoFile(path=f"{prefix}config.json", size=1362, oid=f"cfg-{blob}", lfs=None)]
    items.append(RepoFile(path=f"{prefix}tokenizer.json", size=1834, oid="tok", lfs=None))
    if weights:
        # the API's own JSON keys, as RepoFile parses them
        lfs = {"size": 2700040, "oid": hashlib.sha256(blob.encode()).hexdigest(), "pointerSize": 134}
        items.append(RepoFile(path=f"{prefix}model.safetensors", size=2700040, oid=f"w-{blob}", lfs=lfs))
    if folder:
        items.insert(0, RepoFolder(path=folder, oid=f"tree-{folder}-{blob}"))
    return items


def git_refs(branches: dict[str, str] = (), tags: dict[str, str] = ()) -> GitRefs:
    return GitRefs(
        branches=[
            GitRefInfo(name=n, ref=f"refs/heads/{n}", target_commit=s) for n, s in dict(branches).items()
        ],
        converts=[],
        tags=[GitRefInfo(name=n, ref=f"refs/tags/{n}", target_commit=s) for n, s in dict(tags).items()],
    )
