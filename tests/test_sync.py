"""`plantcad-flows sync`: only changed files move, globs select, checksums are the store's own.

Against a real S3-compatible server on loopback (moto_server, started here and stopped by PID):
a second sync transfers nothing, include/exclude globs work, a file changed in place (same size)
moves again, and an object uploaded in parts by boto3 is recognised by its multipart ETag. The
Hugging Face hub cannot be reached from here: its listing format is fed in and the one commit
that would be sent is checked.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
from servers import start_moto

from plantcad_flows.cluster.processes import stop_process_group
from plantcad_flows.layout import sync as sync_mod
from plantcad_flows.layout.sync import Entry, Tree, multipart_etag, plan_copies, remote_digest, selected, sync

CLI = Path(sys.executable).parent / "plantcad-flows"
MOTO = Path(sys.executable).parent / "moto_server"
BUCKET = "plantcad-sync"


def make_tree(root: Path) -> None:
    for rel, text in {
        "metrics.json": '{"acc": 1}',
        "ckpt/model.bin": "weights" * 100,
        "ckpt/opt.bin": "optim" * 100,
        "logs/run.log": "line\n" * 10,
        "logs/deep/trace.log": "t" * 5,
    }.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)


def test_globs_match_paths_and_base_names():
    assert selected("a/b/x.json", ["*.json"])  # no `/`: base name
    assert selected("a/b/x.json", ["a/*"])  # `*` crosses `/`
    assert not selected("a/b/x.json", ["b/*"])
    assert not selected("a/b/x.json", [], ["*.json"])
    assert not selected("a/b/x.json", ["*.json"], ["a/b/*"])
    assert selected("x.bin", [], ["*.json"])


def test_local_sync_skips_unchanged_and_recopies_changed_content(tmp_path):
    src, dst = tmp_path / "src", tmp_path / "dst"
    make_tree(src)
    first = sync(str(src), str(dst))
    assert sorted(first.copied) == sorted(str(p.relative_to(src)) for p in src.rglob("*") if p.is_file())
    assert sync(str(src), str(dst)).copied == []
    (src / "metrics.json").write_text('{"acc": 2}')  # same size, other bytes
    again = sync(str(src), str(dst))
    assert again.copied == ["metrics.json"] and len(again.skipped) == 4
    assert (dst / "metrics.json").read_text() == '{"acc": 2}'
    assert not list(dst.rglob("*.tmp-*"))


def test_hub_checksums_decide_without_downloading(tmp_path, monkeypatch):
    """HfFileSystem's listing: LFS files carry a SHA-256, others a git blob id."""
    make_tree(tmp_path)
    src = sync_mod.list_tree(str(tmp_path))
    small = (tmp_path / "metrics.json").read_bytes()
    big = (tmp_path / "ckpt/model.bin").read_bytes()
    blob = hashlib.sha1(b"blob %d\0" % len(small) + small).hexdigest()
    infos = {
        "metrics.json": {"size": len(small), "blob_id": blob, "lfs": None},
        "ckpt/model.bin": {
            "size": len(big),
            "blob_id": "0" * 40,
            "lfs": {"sha256": hashlib.sha256(big).hexdigest()},
        },
        "ckpt/opt.bin": {"size": 500, "blob_id": "f" * 40, "lfs": {"sha256": "0" * 64}},  # other content
    }
    entries = {
        rel: Entry(rel, f"datasets/org/repo/out/{rel}", info["size"], remote_digest(info))
        for rel, info in infos.items()
    }

    class FakeHubFs:
        def resolve_path(self, path):
            return type(
                "R",
                (),
                {
                    "repo_type": "dataset",
                    "repo_id": "org/repo",
                    "revision": None,
                    "path_in_repo": path.split("org/repo/")[1],
                },
            )

    dst = Tree("hf://datasets/org/repo/out", FakeHubFs(), "datasets/org/repo/out", entries)
    copy, same = plan_copies(src, dst, exclude=["logs/deep/*"])
    assert [e.rel for e in same] == ["ckpt/model.bin", "metrics.json"]
    assert [e.rel for e in copy] == ["ckpt/opt.bin", "logs/run.log"]

    sent = []
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub.HfApi, "create_commit", lambda self, **kw: sent.append(kw))
    sync_mod._hf_commit(dst, copy)
    [commit] = sent  # one commit for the whole sync, not one per file
    assert (commit["repo_id"], commit["repo_type"]) == ("org/repo", "dataset")
    assert [op.path_in_repo for op in commit["operations"]] == ["out/ckpt/opt.bin", "out/logs/run.log"]


# --- against a real S3-compatible server ------------------------------------------------------------


@pytest.fixture(scope="module")
def s3_env(tmp_path_factory):
    url, proc = start_moto(tmp_path_factory.mktemp("moto"))
    try:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "PREFECT_"))}
        env.update(
            AWS_ACCESS_KEY_ID="testing",
            AWS_SECRET_ACCESS_KEY="testing",
            AWS_DEFAULT_REGION="us-east-1",
            AWS_ENDPOINT_URL=url,
        )
        import boto3

        client = boto3.client(
            "s3",
            endpoint_url=url,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )
        client.create_bucket(Bucket=BUCKET)
        yield env, client
    finally:
        stop_process_group(proc)


def _sync(env, *args) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(CLI), "sync", *args], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def _keys(client, prefix: str) -> dict[str, str]:
    objects = client.list_objects_v2(Bucket=BUCKET, Prefix=prefix).get("Contents", [])
    return {o["Key"][len(prefix) :]: o["ETag"] for o in objects}


@pytest.mark.slow
def test_s3_up_twice_transfers_nothing_the_second_time(s3_env, tmp_path):
    env, client = s3_env
    make_tree(tmp_path / "local")
    remote = f"s3://{BUCKET}/runs/a"
    first = _sync(env, "up", str(tmp_path / "local"), remote)
    assert first.stdout.splitlines()[-1].endswith("5 copied (1265 bytes), 0 unchanged")
    etags = _keys(client, "runs/a/")
    assert set(etags) == {
        "metrics.json",
        "ckpt/model.bin",
        "ckpt/opt.bin",
        "logs/run.log",
        "logs/deep/trace.log",
    }
    second = _sync(env, "up", str(tmp_path / "local"), remote)
    assert second.stdout.splitlines() == [
        f"{tmp_path / 'local'} -> {remote}: 0 copied (0 bytes), 5 unchanged"
    ]
    assert _keys(client, "runs/a/") == etags  # nothing rewritten

    (tmp_path / "local" / "ckpt" / "opt.bin").write_text("OPTIM" * 100)  # same size, new bytes
    third = _sync(env, "up", str(tmp_path / "local"), remote)
    assert third.stdout.splitlines()[0] == "copied ckpt/opt.bin"

    down = tmp_path / "down"
    _sync(env, "down", str(down), remote)
    assert (down / "ckpt" / "opt.bin").read_text() == "OPTIM" * 100
    again = _sync(env, "down", str(down), remote)
    assert again.stdout.splitlines()[-1].endswith("0 copied (0 bytes), 5 unchanged")


@pytest.mark.slow
def test_s3_include_and_exclude_globs(s3_env, tmp_path):
    env, client = s3_env
    make_tree(tmp_path / "local")
    remote = f"s3://{BUCKET}/runs/globs"
    out = _sync(
        env,
        "up",
        str(tmp_path / "local"),
        remote,
        "--include",
        "*.log",
        "--include",
        "*.json",
        "--exclude",
        "logs/deep/*",
    )
    assert set(_keys(client, "runs/globs/")) == {"metrics.json", "logs/run.log"}
    assert "copied logs/run.log" in out.stdout
    down = tmp_path / "down"
    _sync(env, "down", str(down), remote, "--include", "logs/*")
    assert [p.relative_to(down).as_posix() for p in down.rglob("*") if p.is_file()] == ["logs/run.log"]
    dry = _sync(env, "up", str(tmp_path / "local"), remote, "--dry-run")
    assert dry.stdout.splitlines()[-1].endswith("3 copied (1205 bytes), 2 unchanged (dry run)")
    assert set(_keys(client, "runs/globs/")) == {"metrics.json", "logs/run.log"}  # dry run wrote nothing


@pytest.mark.slow
def test_s3_multipart_upload_is_recognised_by_its_etag(s3_env, tmp_path):
    """boto3 uploads a 17 MiB file in 8 MiB parts: its ETag is `md5(part md5s)-3`, not an MD5."""
    env, client = s3_env
    big = tmp_path / "local" / "big.bin"
    big.parent.mkdir()
    big.write_bytes(os.urandom(17 * 2**20))
    client.upload_file(str(big), BUCKET, "runs/mp/big.bin")
    etag = _keys(client, "runs/mp/")["big.bin"].strip('"')
    assert etag.endswith("-3") and etag == multipart_etag(str(big), 8 * 2**20)
    out = _sync(env, "up", str(tmp_path / "local"), f"s3://{BUCKET}/runs/mp")
    assert out.stdout.splitlines()[-1].endswith("0 copied (0 bytes), 1 unchanged")
