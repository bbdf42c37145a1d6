"""Fetch once per node: concurrent processes download a remote object once; new versions refetch."""

from __future__ import annotations

import multiprocessing as mp
import os
import time
from pathlib import Path

import fsspec
import pandas as pd
import pytest
from fsspec.implementations.local import LocalFileSystem

from plantcad_flows.data.node_cache import is_local, local_copy


class SlowRemoteFS(LocalFileSystem):
    """A 'remote' filesystem over a local dir: slow downloads, each logged to a shared file.

    Separate processes share the log, so the test counts real downloads across processes.
    """

    protocol = "slowremote"
    root_marker = "/"

    @classmethod
    def _strip_protocol(cls, path):
        path = str(path)
        if path.startswith("slowremote://"):
            path = path[len("slowremote://") :]
        return LocalFileSystem._strip_protocol(path)

    def get_file(self, rpath, lpath, **kwargs):
        with open(os.environ["SLOWREMOTE_LOG"], "a") as f:
            f.write(f"{os.getpid()} {rpath}\n")
        time.sleep(0.25)  # wide race window: all processes check the cache during the download
        super().get_file(rpath, lpath, **kwargs)


fsspec.register_implementation("slowremote", SlowRemoteFS, clobber=True)


@pytest.fixture
def remote(tmp_path, monkeypatch):
    log = tmp_path / "downloads.log"
    log.touch()
    monkeypatch.setenv("SLOWREMOTE_LOG", str(log))
    src = tmp_path / "bucket"
    src.mkdir()
    return src, log


def _downloads(log: Path) -> list[str]:
    return log.read_text().splitlines()


def test_local_paths_unchanged(tmp_path):
    f = tmp_path / "x.parquet"
    assert local_copy(str(f)) == f
    assert local_copy(f"file://{f}") == f
    assert is_local("data/x.parquet") and not is_local("s3://b/x.parquet")


def test_downloads_once_and_content_matches(remote, tmp_path):
    src, log = remote
    pd.DataFrame({"row_index": [1, 2, 3]}).to_parquet(src / "examples.parquet")
    cache = tmp_path / "cache"
    url = f"slowremote://{src}/examples.parquet"
    p1 = local_copy(url, cache)
    p2 = local_copy(url, cache)
    assert p1 == p2 and p1.name == "examples.parquet" and cache in p1.parents
    assert pd.read_parquet(p1)["row_index"].tolist() == [1, 2, 3]
    assert len(_downloads(log)) == 1
    assert not list(p1.parent.glob(".*partial*"))


def test_new_version_is_fetched_again(remote, tmp_path):
    src, log = remote
    f = src / "a.txt"
    f.write_text("one")
    url = f"slowremote://{f}"
    first = local_copy(url, tmp_path / "c")
    f.write_text("two, longer")  # size and mtime change
    second = local_copy(url, tmp_path / "c")
    assert first != second
    assert first.read_text() == "one" and second.read_text() == "two, longer"
    assert len(_downloads(log)) == 2


def test_directory_copy(remote, tmp_path):
    src, log = remote
    d = src / "split"
    d.mkdir()
    for i in range(3):
        pd.DataFrame({"row_index": [i]}).to_parquet(d / f"part-{i}.parquet")
    p = local_copy(f"slowremote://{d}", tmp_path / "c")
    assert p.name == "split" and sorted(x.name for x in p.iterdir()) == [
        f"part-{i}.parquet" for i in range(3)
    ]
    assert sorted(pd.read_parquet(p)["row_index"].tolist()) == [0, 1, 2]
    (d / "part-3.parquet").write_bytes((d / "part-0.parquet").read_bytes())
    assert local_copy(f"slowremote://{d}", tmp_path / "c") != p  # a new file is a new version


def test_memory_filesystem(tmp_path):
    fs = fsspec.filesystem("memory")
    fs.pipe("/node-cache-test/x.bin", b"abc")
    assert local_copy("memory://node-cache-test/x.bin", tmp_path).read_bytes() == b"abc"


def _fetch(url, cache, out):
    out.put(str(local_copy(url, cache)))


def test_concurrent_processes_download_once(remote, tmp_path):
    src, log = remote
    (src / "big.bin").write_bytes(os.urandom(1 << 20))
    url = f"slowremote://{src}/big.bin"
    ctx = mp.get_context("spawn")  # fork is unsafe once Ray or Prefect threads exist
    out = ctx.Queue()
    procs = [ctx.Process(target=_fetch, args=(url, str(tmp_path / "cache"), out)) for _ in range(4)]
    for p in procs:
        p.start()
    paths = {out.get(timeout=60) for _ in procs}
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    assert len(paths) == 1
    assert Path(paths.pop()).read_bytes() == (src / "big.bin").read_bytes()
    assert len(_downloads(log)) == 1
