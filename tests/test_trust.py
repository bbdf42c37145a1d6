"""Trust under real mistakes (issue 18): a model retrained in place is re-scored, a model that
cannot work is refused at plan time from its config.json and tokenizer (local and hub), settings
that would do nothing are errors, and a full disk fails a step with nothing marked complete.

The CLI cases run `plantcad-flows eval` in this process as `test_bad_input.py` does (exit 2, one
line on stderr naming the field and value, nothing under the prefix). The hub is faked at the
`huggingface_hub` boundary only (`hub_fake.FakeHub`); the disk is a real 1 MiB tmpfs where this
host lets us mount one, and an injected ENOSPC at the write boundary otherwise.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest
import yaml
from conftest import eval_config
from hub_fake import FakeHub, repo_files
from test_bad_input import _base, _model_copy, dead_api  # noqa: F401 - dead_api is a fixture

import plantcad_flows.identity.digests as digests
from plantcad_flows import steps
from plantcad_flows.cli import main
from plantcad_flows.config import CheckpointsConfig, ComputeConfig, EvalConfig, ModelConfig
from plantcad_flows.errors import DiskFullError, ValidationError
from plantcad_flows.identity.checkpoints import discover
from plantcad_flows.identity.content import local_model_fingerprint
from plantcad_flows.layout.plan import CellStatus, build_cells, plan_cells
from plantcad_flows.layout.sharding import plan_shards
from plantcad_flows.layout.storage import SUCCESS, to_path, write_bytes_atomic
from plantcad_flows.scoring.preflight import check_model

ASSETS = Path(__file__).resolve().parents[1] / "plantcad_flows" / "assets" / "models"
MIB = 1 << 20
SHA = "c" * 40


@pytest.fixture(autouse=True)
def cache_home(tmp_path, monkeypatch) -> Path:
    """The digest index under tmp_path, never the user's ~/.cache."""
    home = tmp_path / "xdg-cache"
    monkeypatch.setenv("XDG_CACHE_HOME", str(home))
    return home / "plantcad-flows" / "digests"


def _age(directory: Path, seconds: float = 60) -> None:
    """Files written a while ago (older than the index's racy window), as a trained model is."""
    then = time.time() - seconds
    for f in directory.iterdir():
        os.utime(f, (then, then))


# ------------------------------------------------------------------ identity by content


def _flip_middle_weight(weights: Path) -> int:
    """Change one byte in the middle of a safetensors file's data: the lowest mantissa byte of
    a float32 (the model stays loadable and finite), same size, same first and last MiB."""
    data = bytearray(weights.read_bytes())
    start = 8 + int.from_bytes(data[:8], "little")  # after the JSON header
    at = start + ((len(data) // 2 - start) // 4) * 4
    assert MIB < at < len(data) - MIB
    data[at] ^= 0x01
    with open(weights, "r+b") as f:  # in place: same inode, same size
        f.seek(at)
        f.write(bytes([data[at]]))
    return at


def _run_cell(cell):
    prepared = steps.prepare(cell.split_job)
    outputs = [steps.score_shard(cell, s, prepared) for s in plan_shards(prepared.num_examples, 1)]
    return outputs, steps.finalize_cell(cell, outputs, prepared)


def test_a_checkpoint_retrained_in_place_is_rescored(synthetic_dir, tmp_path):
    """Same names, same sizes, same first and last MiB, one byte different in the middle: the
    identity, the cell's key and so its home change, and the cell is scored again."""
    model = tmp_path / "tiny-clm"
    shutil.copytree(ASSETS / "tiny-clm", model)
    weights = model / "model.safetensors"
    assert weights.stat().st_size > 3 * MIB  # the middle is outside both ends
    _age(model)
    cfg = eval_config(
        {"mlm": model, "clm": model}, synthetic_dir, tmp_path / "out", tasks=(("tis_recovery", "test_maize"),)
    )
    cfg["models"] = cfg["models"][1:]  # the causal LM
    config = EvalConfig.model_validate(cfg)

    [before] = build_cells(config)
    outputs, result = _run_cell(before)
    assert result.status == "completed" and all(o.computed for o in outputs)
    assert [p.status for p in plan_cells(config)] == [CellStatus.CACHED]

    head, tail, size, inode = (
        weights.read_bytes()[:MIB],
        weights.read_bytes()[-MIB:],
        weights.stat().st_size,
        weights.stat().st_ino,
    )
    _flip_middle_weight(weights)
    assert (weights.read_bytes()[:MIB], weights.read_bytes()[-MIB:]) == (head, tail)
    assert (weights.stat().st_size, weights.stat().st_ino) == (size, inode)

    [after] = build_cells(config)
    assert after.model_identity.fingerprint != before.model_identity.fingerprint
    assert after.key != before.key and after.dir != before.dir
    assert [p.status for p in plan_cells(config)] == [CellStatus.TO_RUN]  # not served from cache
    outputs, result = _run_cell(after)
    assert result.status == "completed" and all(o.computed for o in outputs)
    assert (to_path(after.dir) / SUCCESS).exists() and (to_path(before.dir) / SUCCESS).exists()


def test_an_unchanged_checkpoint_is_read_once(tmp_path, monkeypatch, cache_home):
    model = tmp_path / "tiny-mlm"
    shutil.copytree(ASSETS / "tiny-mlm", model)
    _age(model)
    reads: list[str] = []
    real = digests.stream_sha256
    monkeypatch.setattr(digests, "stream_sha256", lambda p: reads.append(os.path.basename(p)) or real(p))

    first = local_model_fingerprint(str(model))
    assert sorted(reads) == sorted(f.name for f in model.iterdir())  # every file, in full
    assert len(list(cache_home.rglob("*.json"))) == len(reads)
    reads.clear()
    assert local_model_fingerprint(str(model)) == first and reads == []  # from the index
    os.utime(model / "config.json", (time.time() - 30, time.time() - 30))  # touched, same bytes
    assert local_model_fingerprint(str(model)) == first and reads == ["config.json"]


def test_a_file_written_just_now_is_hashed_but_not_remembered(tmp_path, cache_home):
    f = tmp_path / "w.bin"
    f.write_bytes(b"x" * 1000)
    assert digests.file_digest(f) == digests.stream_sha256(f)
    assert not cache_home.exists() or not list(cache_home.rglob("*.json"))
    _age(tmp_path)
    digests.file_digest(f)
    assert len(list(cache_home.rglob("*.json"))) == 1


def test_concurrent_writers_leave_a_valid_index(tmp_path, cache_home):
    files = []
    for i in range(6):
        p = tmp_path / "m" / f"f{i}.bin"
        p.parent.mkdir(exist_ok=True)
        p.write_bytes(os.urandom(200_000))
        files.append(p)
    _age(tmp_path / "m")
    expected = {str(p): digests.stream_sha256(p) for p in files}
    errors: list[BaseException] = []

    def worker():
        try:
            for p in files:
                assert digests.file_digest(p) == expected[str(p)]
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    entries = list(cache_home.rglob("*"))
    assert not [e for e in entries if ".tmp-" in e.name]
    records = [json.loads(e.read_text()) for e in entries if e.is_file()]
    assert sorted(r["sha256"] for r in records) == sorted(expected.values())


def test_a_corrupt_index_entry_is_ignored(tmp_path, cache_home):
    f = tmp_path / "w.bin"
    f.write_bytes(b"abc")
    _age(tmp_path)
    digests.file_digest(f)
    [entry] = cache_home.rglob("*.json")
    entry.write_text('{"key": {}, "sha256": "' + "0" * 64 + '"}')  # another key: not trusted
    assert digests.file_digest(f) == digests.stream_sha256(f)
    entry.write_text("{not json")
    assert digests.file_digest(f) == digests.stream_sha256(f)


# ------------------------------------------------------------------ settings that do nothing


def test_revision_on_a_local_model_directory_is_an_error(small_models):
    from plantcad_flows.identity.resolve import resolve_model

    with pytest.raises(ValidationError, match=r"models\[m\]\.revision='v1'.*local directory"):
        resolve_model(ModelConfig(path=str(small_models["mlm"]), name="m", revision="v1", context_length=512))


def test_revision_on_a_local_checkpoint_run_is_an_error(tmp_path):
    (tmp_path / "run").mkdir()
    with pytest.raises(ValidationError, match=r"checkpoints\[run\]\.revision='main'.*local run directory"):
        discover(CheckpointsConfig(path=str(tmp_path / "run"), revision="main"))


def test_revision_with_branches_on_the_hub_is_an_error(monkeypatch):
    FakeHub(derive=True).install(monkeypatch)
    with pytest.raises(ValidationError, match=r"checkpoints\[run\]\.revision='dev'.*match: branches"):
        discover(CheckpointsConfig(path="org/run", match="branches", revision="dev"))


# ------------------------------------------------------------------ model preflight, through the CLI


def _edit_config_json(directory: Path, **changes) -> None:
    conf = json.loads((directory / "config.json").read_text())
    for k, v in changes.items():
        if v is None:
            conf.pop(k, None)
        else:
            conf[k] = v
    (directory / "config.json").write_text(json.dumps(conf))


def _unknown_architecture(cfg, tmp_path, small_models, **_):
    d = _model_copy(tmp_path, small_models, "dnaformer")
    _edit_config_json(d, model_type="dnaformer", architectures=["DnaFormerForMaskedLM"])
    cfg["models"][0].update(path=str(d), name="dnaformer")
    return cfg


def _causal_as_mlm(cfg, tmp_path, small_models, **_):
    d = tmp_path / "models" / "llama"
    shutil.copytree(small_models["clm"], d)
    cfg["models"][0].update(path=str(d), name="llama", type="mlm")
    return cfg


def _no_mask_token(cfg, tmp_path, small_models, **_):
    from model_factory import VOCAB
    from tokenizers import Tokenizer, normalizers, pre_tokenizers
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    d = _model_copy(tmp_path, small_models, "no-mask")
    core = Tokenizer(WordLevel(vocab={t: i for i, t in enumerate(VOCAB)}, unk_token="[UNK]"))
    core.normalizer = normalizers.Lowercase()
    core.pre_tokenizer = pre_tokenizers.Split(pattern="", behavior="isolated")
    for f in d.glob("*token*"):
        f.unlink()
    PreTrainedTokenizerFast(tokenizer_object=core, pad_token="[PAD]", unk_token="[UNK]").save_pretrained(d)
    cfg["models"][0].update(path=str(d), name="nomask")
    return cfg


def _context(value):
    def edit(cfg, **_):
        cfg["models"][0]["context_length"] = value
        return cfg

    return edit


def _local_revision(cfg, **_):
    cfg["models"][0]["revision"] = "v1.0"
    return cfg


def serve_hub_model(monkeypatch, tmp_path: Path, small_models, config_changes: dict | None = None) -> FakeHub:
    """The small MLM served by a fake hub as `org/dna-mlm` at commit SHA: its config and
    tokenizer files, and a weights entry in the tree that must never be fetched."""
    from huggingface_hub.hf_api import RepoFile

    hub = FakeHub(download_root=tmp_path / "hub-cache").install(monkeypatch)
    hub.set("org/dna-mlm", None, SHA)
    served = {f.name: f.read_bytes() for f in Path(small_models["mlm"]).iterdir() if f.is_file()}
    served.pop("model.safetensors")
    if config_changes:
        served["config.json"] = json.dumps({**json.loads(served["config.json"]), **config_changes}).encode()
    hub.files[("org/dna-mlm", SHA)] = served
    weights = [f for f in repo_files("") if f.path == "model.safetensors"]
    hub.trees[("org/dna-mlm", SHA)] = weights + [
        RepoFile(path=n, size=len(b), oid=n, lfs=None) for n, b in served.items()
    ]
    return hub


def _hub_model(config_changes: dict | None = None, **model):
    def edit(cfg, small_models, monkeypatch, tmp_path, **_):
        serve_hub_model(monkeypatch, tmp_path, small_models, config_changes)
        cfg["models"][0].update(path="org/dna-mlm", name="hub-mlm", **model)
        return cfg

    return edit


def _lost_after_not_a_number(cfg, monkeypatch, **_):
    monkeypatch.setenv("PLANTCAD_API_LOST_AFTER", "soon")
    return cfg


PREFLIGHT_CASES = [
    (
        "context-over-position-limit",
        _context(1024),
        ["models[mlm].context_length=1024", "position limit", "max_position_embeddings: 512"],
    ),
    (
        "unknown-architecture",
        _unknown_architecture,
        ["models[dnaformer].path=", "model_type='dnaformer'", "not known to transformers"],
    ),
    ("causal-lm-as-mlm", _causal_as_mlm, ["models[llama].type='mlm'", "no masked-LM class", "type clm?"]),
    ("mlm-without-mask-token", _no_mask_token, ["models[nomask].path=", "no mask token"]),
    ("revision-on-local-model", _local_revision, ["models[mlm].revision='v1.0'", "local directory"]),
    (
        "hub-context-over-position-limit",
        _hub_model(context_length=2048),
        ["models[hub-mlm].context_length=2048", "max_position_embeddings: 512"],
    ),
    (
        "hub-unknown-architecture",
        _hub_model({"model_type": "dnaformer"}),
        ["models[hub-mlm].path='org/dna-mlm'", "model_type='dnaformer'", "not known"],
    ),
    (
        "hub-ships-code-untrusted",
        _hub_model({"auto_map": {"AutoModelForMaskedLM": "modeling_x.XForMaskedLM"}}),
        ["models[hub-mlm].trust_remote_code=False", "auto_map"],
    ),
    (
        "lost-after-not-a-number",
        _lost_after_not_a_number,
        ["PLANTCAD_API_LOST_AFTER='soon'", "positive number of seconds"],
    ),
]


@pytest.mark.parametrize("case,edit,needles", PREFLIGHT_CASES, ids=[c[0] for c in PREFLIGHT_CASES])
def test_a_model_that_cannot_work_exits_2_at_plan_time(
    case,
    edit,
    needles,
    small_models,
    synthetic_dir,
    tmp_path,
    capsys,
    monkeypatch,
    dead_api,  # noqa: F811
):
    prefix = tmp_path / "evals"
    cfg = edit(
        _base(small_models, synthetic_dir, prefix),
        tmp_path=tmp_path,
        small_models=small_models,
        monkeypatch=monkeypatch,
    )
    cfg_path = tmp_path / "bad.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg))
    monkeypatch.chdir(tmp_path)
    capsys.readouterr()
    t0 = time.perf_counter()
    code = main(["eval", str(cfg_path)])
    elapsed = time.perf_counter() - t0
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert code == 2, (code, out, err)
    assert out == "" and len(lines) == 1 and lines[0].startswith("config error"), err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    assert not prefix.exists() or not any(prefix.rglob("*"))
    print(f"{case}: {elapsed:.2f}s in-process: {lines[0]}")


def test_the_hub_preflight_fetches_config_and_tokenizer_only(
    small_models, synthetic_dir, tmp_path, monkeypatch
):
    from plantcad_flows.identity.resolve import resolve

    hub = serve_hub_model(monkeypatch, tmp_path, small_models)
    cfg = _base(small_models, synthetic_dir, tmp_path / "evals")
    cfg["models"][0].update(path="org/dna-mlm", name="hub-mlm")
    [resolved] = resolve(EvalConfig.model_validate(cfg)).models
    assert resolved.model.revision == SHA
    check_model(resolved.model, ComputeConfig(device="cpu"), True, [8192])  # a usable model passes
    fetched = [c for c in hub.calls if c[0] == "hf_hub_download"]
    names = sorted(c[3] for c in fetched)
    assert "config.json" in names and "tokenizer.json" in names, names
    assert "model.safetensors" not in names  # never the weights
    assert {c[2] for c in fetched} == {SHA}  # at the resolved commit


def test_checkpoints_in_subfolders_of_one_commit_are_listed_once(small_models, tmp_path, monkeypatch):
    import hashlib

    sha = hashlib.sha1(str(tmp_path).encode()).hexdigest()  # a commit no other test lists
    hub = FakeHub(download_root=tmp_path / "hub-cache").install(monkeypatch)
    mlm = {f.name: f.read_bytes() for f in Path(small_models["mlm"]).iterdir() if f.is_file()}
    mlm.pop("model.safetensors")
    hub.files[("org/run", sha)] = {f"step-{n}/{name}": b for n in (100, 200) for name, b in mlm.items()}
    for n in (100, 200):
        model = ModelConfig(
            path="org/run", subfolder=f"step-{n}", revision=sha, name=f"run@step-{n}", context_length=512
        )
        check_model(model, ComputeConfig(device="cpu"), True, [8192])
    assert [c[0] for c in hub.calls].count("list_repo_tree") == 1
    fetched = sorted(c[3] for c in hub.calls if c[0] == "hf_hub_download")
    assert fetched == sorted(hub.files[("org/run", sha)]), fetched


# ------------------------------------------------------------------ disk full


@pytest.fixture
def small_disk(tmp_path):
    """A 1 MiB tmpfs at tmp_path/disk (root only); unmounted at teardown."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mount = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(disk)], capture_output=True)
    if mount.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mount.stderr.decode().strip()}")
    try:
        yield disk
    finally:
        subprocess.run(["umount", str(disk)], check=False)


def _fill(disk: Path) -> Path:
    filler = disk / "filler"
    with open(filler, "wb") as f, contextlib.suppress(OSError):
        while True:
            f.write(b"\0" * 65536)
            f.flush()
    return filler


def test_a_full_disk_fails_the_step_and_a_rerun_completes(small_models, synthetic_dir, small_disk):
    prefix = small_disk / "evals"
    cfg = eval_config(small_models, synthetic_dir, prefix, tasks=(("tis_recovery", "test_maize"),))
    cfg["models"] = cfg["models"][:1]
    [cell] = build_cells(EvalConfig.model_validate(cfg))
    prepared = steps.prepare(cell.split_job)
    filler = _fill(small_disk)
    with pytest.raises(DiskFullError) as e:
        steps.score_shard(cell, plan_shards(prepared.num_examples, 1)[0], prepared)
    line = str(e.value)
    assert "\n" not in line and "no space left on device" in line
    assert str(prefix) in line and "free of 1.0 MiB under" in line, line
    assert not list(prefix.rglob("*.tmp-*"))  # the partial write was removed
    cell_dir = Path(to_path(cell.dir).path)
    assert not (cell_dir / SUCCESS).exists()
    assert not list(cell_dir.rglob("*.parquet*"))  # no shard, no sidecar vouching for one

    filler.unlink()  # space freed
    outputs, result = _run_cell(cell)
    assert result.status == "completed" and all(o.computed for o in outputs)
    assert (cell_dir / SUCCESS).exists()


def test_enospc_at_the_write_boundary_names_the_file_and_leaves_nothing(tmp_path, monkeypatch):
    """Where no tmpfs can be mounted: ENOSPC injected at the write itself."""
    import plantcad_flows.layout.storage as storage

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(storage.os, "fsync", full)
    target = to_path(str(tmp_path / "evals" / "score_cell-x" / SUCCESS))
    with pytest.raises(
        DiskFullError, match=r"no space left on device: cannot write .*evals/score_cell-x/_SUCCESS"
    ):
        write_bytes_atomic(target, b"{}")
    assert list((tmp_path / "evals" / "score_cell-x").iterdir()) == []  # no temporary left behind
    monkeypatch.undo()
    write_bytes_atomic(target, b"{}")
    assert Path(target.path).read_bytes() == b"{}"
