"""Identities resolved at plan time: hub revisions to commits, data and local models by content,
a local clone of the hub dataset at a revision, retries at the hub boundary, and the synthetic
benchmark's generator version.

The hub is faked at the `huggingface_hub` boundary only (`hub_fake.FakeHub`); everything above
it (resolution, plan, keys, the CLI) is the real code. The offline case uses the real library
with `HF_HUB_OFFLINE=1`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from hub_fake import FakeHub, http_error

import plantcad_flows.identity.resolve as resolve_mod
from plantcad_flows.config import EvalConfig, SamplingConfig, SplitConfig
from plantcad_flows.errors import ValidationError
from plantcad_flows.identity.resolve import resolve, resolve_split
from plantcad_flows.io import retry
from plantcad_flows.layout.plan import build_cells, plan_cells
from plantcad_flows.layout.storage import STEP_INFO, read_json, to_path
from plantcad_flows.results.table import cell_result

CLI = Path(sys.executable).parent / "plantcad-flows"
REPO = Path(__file__).resolve().parents[1]
SHA_A = "a" * 40
SHA_B = "b" * 40
TASK, SPLIT = "tis_recovery", "test_maize"


@pytest.fixture
def hub(monkeypatch) -> FakeHub:
    return FakeHub().install(monkeypatch)


@pytest.fixture
def no_sleep(monkeypatch) -> list[float]:
    waits: list[float] = []
    monkeypatch.setattr(retry, "_sleep", waits.append)
    return waits


def _split_file(path: Path, labels=(1, 0, 1)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"sequence": ["ACGT" * 2] * len(labels), "label": list(labels)}).to_parquet(
        path, index=False
    )
    return path


def _config(
    models, split_path: Path | None = None, prefix: str = "/nonexistent/prefix", **split
) -> EvalConfig:
    s = {"task": TASK, "split": SPLIT, "seq_length": 8, **split}
    if split_path is not None:
        s["path"] = str(split_path)
    return EvalConfig.model_validate(
        {
            "models": models,
            "splits": [s],
            "executor": {"prefix": prefix},
            "sampling": {"seed": 0},
        }
    )


HUB_MODEL = {"path": "org/dna-lm", "name": "lm", "type": "mlm", "context_length": 8, "revision": "main"}


# ------------------------------------------------------------------ hub revisions


def test_new_sha_on_the_same_branch_moves_the_key_and_is_pinned(hub, tmp_path):
    data = _split_file(tmp_path / "s.parquet")
    hub.set("org/dna-lm", "main", SHA_A)
    before = build_cells(_config([HUB_MODEL], data))[0]
    hub.set("org/dna-lm", "main", SHA_B)  # someone pushed to main overnight
    after = build_cells(_config([HUB_MODEL], data))[0]

    assert before.key != after.key and before.dir != after.dir  # its cells are scored again
    assert before.split_job.key == after.split_job.key  # the data did not move
    assert (before.model.revision, after.model.revision) == (SHA_A, SHA_B)  # workers load the commit
    assert after.model_identity.requested == "main" and after.model_identity.revision == SHA_B
    row = cell_result(after, "completed", {"auroc": 0.5})
    assert row.model_revision == SHA_B and row.row()["model_revision"] == SHA_B


def test_same_commit_is_the_same_cell_whatever_names_it(hub, tmp_path):
    data = _split_file(tmp_path / "s.parquet")
    hub.set("org/dna-lm", "main", SHA_A)
    hub.set("org/dna-lm", "v1.0", SHA_A)
    keys = {
        rev: build_cells(_config([{**HUB_MODEL, "revision": rev}], data))[0].key
        for rev in ("main", "v1.0", SHA_A)
    }
    assert len(set(keys.values())) == 1, keys  # served from cache: same commit, same key
    # the pinned commit needed no call at all; each name one model_info call
    assert [c for c in hub.calls if c[0] == "model_info"] == [
        ("model_info", "org/dna-lm", "main"),
        ("model_info", "org/dna-lm", "v1.0"),
    ]


def test_resolution_happens_once_per_plan_not_per_key(hub, tmp_path, monkeypatch):
    data = _split_file(tmp_path / "s.parquet")
    hub.set("org/dna-lm", "main", SHA_A)
    model_dir = tmp_path / "local-model"
    model_dir.mkdir()
    (model_dir / "config.json").write_text("{}")
    counts = {"fingerprint": 0}
    real = resolve_mod.local_model_fingerprint

    def counting(*a, **k):
        counts["fingerprint"] += 1
        return real(*a, **k)

    monkeypatch.setattr(resolve_mod, "local_model_fingerprint", counting)
    models = [HUB_MODEL, {"path": str(model_dir), "name": "local", "context_length": 8}]
    cfg = _config(models, data)
    planned = plan_cells(cfg)
    for p in planned:
        for _ in range(5):
            _ = (p.cell.key, p.cell.dir, p.cell.fields, p.cell.split_job.key)
    assert counts["fingerprint"] == 1
    assert [c[0] for c in hub.calls] == ["model_info"]
    assert {p.cell.model_identity.kind for p in planned} == {"hub", "local"}


@pytest.mark.parametrize(
    "model,needles",
    [
        (
            {**HUB_MODEL, "revision": "no-such-branch"},
            ["models[lm].revision='no-such-branch'", "no such branch"],
        ),
        ({**HUB_MODEL, "path": "org/missing"}, ["models[lm].revision='main'", "org/missing", "not found"]),
        ({**HUB_MODEL, "path": "/no/such/dir"}, ["models[lm].path='/no/such/dir'", "no such directory"]),
    ],
    ids=["branch", "repo", "local-dir"],
)
def test_unresolvable_model_names_the_model_and_the_revision(hub, tmp_path, model, needles):
    hub.set("org/dna-lm", "main", SHA_A)
    with pytest.raises(ValidationError) as e:
        resolve(_config([model], _split_file(tmp_path / "s.parquet")))
    text = str(e.value)
    assert "\n" not in text
    for n in needles:
        assert n in text, (n, text)


def test_dataset_revision_is_resolved_hashed_and_recorded(hub):
    hub.set("org/dna-lm", "main", SHA_A)
    hub.set("plantcad/PlantCAD2_zero_shot_tasks", None, SHA_A, repo_type="dataset")
    hub.set("plantcad/PlantCAD2_zero_shot_tasks", "v2", SHA_B, repo_type="dataset")
    default = build_cells(_config([HUB_MODEL]))[0]
    v2 = build_cells(_config([HUB_MODEL], revision="v2"))[0]
    assert default.split_job.key != v2.split_job.key and default.key != v2.key
    assert v2.split.revision == SHA_B  # prepare loads exactly this commit
    assert cell_result(v2, "completed", {"auroc": 1.0}).dataset_revision == SHA_B
    with pytest.raises(ValidationError, match=r"splits\[tis_recovery/test_maize\]\.revision='v3'"):
        build_cells(_config([HUB_MODEL], revision="v3"))


def test_cli_unresolvable_revision_is_one_line_before_anything_loads(tmp_path):
    """A real run (not a dry run) with the real huggingface_hub offline: exit 2, one line naming
    the model and the revision, no Prefect, torch or transformers imported, nothing written."""
    data = _split_file(tmp_path / "s.parquet")
    cfg = tmp_path / "c.yaml"
    prefix = tmp_path / "out"
    cfg.write_text(
        yaml.safe_dump(
            {
                "models": [HUB_MODEL],
                "splits": [{"task": TASK, "split": SPLIT, "path": str(data), "seq_length": 8}],
                "executor": {"prefix": str(prefix)},
            }
        )
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "HF_"))}
    env.update(HF_HUB_OFFLINE="1", PYTHONPATH=str(REPO), PREFECT_API_URL="http://127.0.0.1:9/api")
    proc = subprocess.run(
        [str(CLI), "eval", str(cfg)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and proc.stdout == "", proc.stderr
    assert "models[lm].revision='main'" in lines[0] and "HF_HUB_OFFLINE" in lines[0], lines[0]
    assert not prefix.exists()

    probe = (
        "import sys\nfrom plantcad_flows.cli import main\n"
        f"rc = main(['eval', {str(cfg)!r}])\n"
        "heavy = sorted(m for m in ('torch', 'transformers', 'prefect', 'ray') if m in sys.modules)\n"
        "print('RC', rc, 'HEAVY', heavy)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert "RC 2 HEAVY []" in out.stdout, out.stdout + out.stderr


def test_pinned_commits_resolve_offline_with_no_hub_call(hub, tmp_path):
    cfg = _config([{**HUB_MODEL, "revision": SHA_A.upper()}], revision=SHA_B)
    cell = build_cells(cfg)[0]
    assert hub.calls == []
    assert cell.model.revision == SHA_A and cell.split.revision == SHA_B


# ------------------------------------------------------------------ retries at the hub boundary


def test_transient_hub_errors_are_retried_with_backoff(hub, no_sleep):
    import httpx2
    from huggingface_hub.errors import HfHubHTTPError

    hub.set("org/dna-lm", "main", SHA_A)
    hub.failures = [
        http_error(HfHubHTTPError, 503),
        http_error(HfHubHTTPError, 429),
        httpx2.ConnectError("connection refused"),
    ]
    assert resolve_mod.resolve_model(resolve_mod.ModelConfig(**HUB_MODEL)).identity.revision == SHA_A
    assert len(hub.calls) == 4 and no_sleep == [1.0, 2.0, 4.0]


def test_permanent_hub_errors_fail_at_once(hub, no_sleep):
    hub.set("org/dna-lm", "main", SHA_A)
    with pytest.raises(ValidationError, match="not found"):
        resolve_mod.resolve_model(resolve_mod.ModelConfig(**{**HUB_MODEL, "path": "org/other"}))
    assert len(hub.calls) == 1 and no_sleep == []


def test_retries_stop_after_five_attempts(hub, no_sleep):
    from huggingface_hub.errors import HfHubHTTPError

    hub.failures = [http_error(HfHubHTTPError, 502) for _ in range(6)]
    with pytest.raises(ValidationError, match="HfHubHTTPError"):
        resolve_mod.resolve_model(resolve_mod.ModelConfig(**HUB_MODEL))
    assert len(hub.calls) == 5 and no_sleep == [1.0, 2.0, 4.0, 8.0]


def test_transient_is_read_through_wrapping_errors():
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled, RepositoryNotFoundError

    def wrapped(inner: BaseException) -> OSError:
        try:
            try:
                raise inner
            except BaseException as e:
                raise OSError("We couldn't connect to 'https://huggingface.co'") from e
        except OSError as outer:
            return outer

    assert retry.is_transient(wrapped(http_error(HfHubHTTPError, 500)))
    assert retry.is_transient(TimeoutError("read timed out"))
    assert not retry.is_transient(wrapped(http_error(RepositoryNotFoundError, 404)))
    assert not retry.is_transient(http_error(HfHubHTTPError, 403))
    assert not retry.is_transient(OfflineModeIsEnabled("offline"))
    assert not retry.is_transient(ValueError("bad"))


# ------------------------------------------------------------------ data and local models by content


def test_replacing_a_parquet_file_at_the_same_path_moves_the_key(hub, tmp_path):
    hub.set("org/dna-lm", "main", SHA_A)
    data = _split_file(tmp_path / "s.parquet", labels=(1, 0, 1))
    first = build_cells(_config([HUB_MODEL], data))[0]
    _split_file(data, labels=(1, 0, 1))  # rewritten, same bytes: same content, same key
    assert build_cells(_config([HUB_MODEL], data))[0].key == first.key
    _split_file(data, labels=(0, 0, 1))  # replaced with other data at the same path
    second = build_cells(_config([HUB_MODEL], data))[0]
    assert second.split_job.key != first.split_job.key and second.key != first.key
    assert second.data_identity.kind == "local" and second.data_identity.fingerprint


def test_a_new_file_in_a_split_directory_moves_the_key(hub, tmp_path):
    hub.set("org/dna-lm", "main", SHA_A)
    d = tmp_path / "split-dir"
    _split_file(d / "part-0.parquet")
    first = build_cells(_config([HUB_MODEL], d))[0].split_job.key
    (d / "notes.txt").write_text("not read, not hashed")
    assert build_cells(_config([HUB_MODEL], d))[0].split_job.key == first
    _split_file(d / "part-1.parquet")
    assert build_cells(_config([HUB_MODEL], d))[0].split_job.key != first


def test_missing_split_file_is_an_error_naming_the_split(tmp_path):
    with pytest.raises(ValidationError, match=r"splits\[tis_recovery/test_maize\]\.path=.*no such file"):
        resolve_split(SplitConfig(task=TASK, split=SPLIT, path=str(tmp_path / "gone.parquet"), seq_length=8))


def test_provenance_records_the_resolved_identity(hub, tmp_path):
    from plantcad_flows.steps import prepare

    hub.set("org/dna-lm", "main", SHA_A)
    data = _split_file(tmp_path / "s.parquet")
    cell = build_cells(_config([HUB_MODEL], data, prefix=str(tmp_path / "out")))[0]
    prepare(cell.split_job)
    info = read_json(to_path(cell.split_job.dir) / STEP_INFO)
    assert info["config"]["identity"] == {"kind": "local", "id": cell.data_identity.fingerprint}
    assert cell.fields["model"]["identity"] == {"kind": "hub", "id": SHA_A}


# ------------------------------------------------------------------ a local clone of the hub dataset


def _git(repo: Path, *args: str) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t"}
    env["GIT_COMMITTER_EMAIL"] = "t@t"
    return subprocess.run(
        ["git", "-C", str(repo), *args], check=True, capture_output=True, text=True, env=env
    ).stdout.strip()


CARD = """\
---
configs:
- config_name: tis_recovery
  data_files:
  - split: test_maize
    path: tis_recovery/test_maize-*.parquet
  - split: test_tomato
    path: tis_recovery/test_tomato-*.parquet
- config_name: conservation_within_andropogoneae
  data_files:
  - split: test
    path: conservation_within_andropogoneae/test-*.parquet
---
# PlantCAD2 zero-shot tasks (local copy, the hub's layout)
"""


def _shards(repo: Path, task: str, split: str, labels: list[int]) -> None:
    """Two parquet shards named as the hub names them: {task}/{split}-0000i-of-00002.parquet."""
    half = len(labels) // 2
    for i, part in enumerate((labels[:half], labels[half:])):
        seqs = [f"{'ACGT' * 2}"[: 8 - 1] + "ACGT"[k % 4] for k in range(len(part))]
        path = repo / task / f"{split}-{i:05d}-of-00002.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        pd.DataFrame({"sequence": seqs, "label": part}).to_parquet(path, index=False)


@pytest.fixture
def dataset_clone(tmp_path, monkeypatch) -> tuple[Path, str, str]:
    """A git repository in the hub dataset's layout with two commits (v1 tagged); caches of
    datasets and of checkouts under tmp_path."""
    import datasets

    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf-datasets"))
    repo = tmp_path / "PlantCAD2_zero_shot_tasks"
    repo.mkdir()
    (repo / "README.md").write_text(CARD)
    _shards(repo, "tis_recovery", "test_maize", [1, 1, 1, 1])
    _shards(repo, "tis_recovery", "test_tomato", [1, 1])
    _shards(repo, "conservation_within_andropogoneae", "test", [0, 1, 0, 1])
    _git(repo, "init", "-q", "-b", "main")
    _git(repo, "add", "-A")
    _git(repo, "commit", "-qm", "v1")
    _git(repo, "tag", "v1")
    v1 = _git(repo, "rev-parse", "HEAD")
    _shards(repo, "tis_recovery", "test_maize", [1, 1, 1, 1, 1, 1])  # more examples in v2
    _git(repo, "commit", "-qam", "v2")
    return repo, v1, _git(repo, "rev-parse", "HEAD")


def test_local_clone_of_the_hub_layout_loads_by_config_and_split(dataset_clone):
    from plantcad_flows.data.splits import load_split, prepare_split

    repo, v1, v2 = dataset_clone
    conservation = SplitConfig(
        task="conservation_within_andropogoneae", split="test", repo_id=str(repo), seq_length=8
    )
    frame = load_split(conservation)
    assert frame["label"].tolist() == [0, 1, 0, 1]  # both shards, in order, of this config only
    assert len(load_split(SplitConfig(task=TASK, split="test_tomato", repo_id=str(repo), seq_length=8))) == 2
    prepared = prepare_split(resolve_split(conservation).split, SamplingConfig())
    assert prepared["label"].tolist() == [0, 1, 0, 1] and len(prepared["sequence"][0]) == 8


def test_local_clone_honours_its_revision(dataset_clone, monkeypatch):
    from plantcad_flows.data.splits import load_split

    repo, v1, v2 = dataset_clone
    by_rev = {}
    for rev in ("v1", v1, "main", None):
        resolved = resolve_split(
            SplitConfig(task=TASK, split=SPLIT, repo_id=str(repo), seq_length=8, revision=rev)
        )
        by_rev[rev] = (resolved, len(load_split(resolved.split)))
    assert by_rev["v1"][1] == by_rev[v1][1] == 4  # the first commit, though the tree holds v2
    assert by_rev["main"][1] == by_rev[None][1] == 6
    assert by_rev["v1"][0].identity.revision == v1 and by_rev["main"][0].identity.revision == v2
    assert by_rev["v1"][0].identity.key == by_rev[v1][0].identity.key  # a tag and its commit agree
    assert by_rev["v1"][0].identity.key != by_rev["main"][0].identity.key
    assert by_rev[None][0].identity.kind == "local"  # no revision: the directory as it is, by content
    with pytest.raises(ValidationError, match=r"splits\[tis_recovery/test_maize\]\.revision='v9'"):
        resolve_split(SplitConfig(task=TASK, split=SPLIT, repo_id=str(repo), seq_length=8, revision="v9"))


def test_checkout_resolves_git_lfs_pointers_from_the_clone(dataset_clone):
    """A clone of the hub repo keeps its parquet files in Git LFS: the archive holds pointers,
    the clone's `.git/lfs/objects` the bytes."""
    import hashlib

    from plantcad_flows.data.dataset_repo import checkout

    repo, v1, _ = dataset_clone
    real = (repo / "tis_recovery" / "test_tomato-00000-of-00002.parquet").read_bytes()
    oid = hashlib.sha256(real).hexdigest()
    pointer = f"version https://git-lfs.github.com/spec/v1\noid sha256:{oid}\nsize {len(real)}\n"
    (repo / "tis_recovery" / "test_tomato-00000-of-00002.parquet").write_text(pointer)
    _git(repo, "commit", "-qam", "lfs pointer")
    sha = _git(repo, "rev-parse", "HEAD")
    with pytest.raises(ValidationError, match="git lfs fetch"):
        checkout(str(repo), sha, "splits[x].revision")
    obj = Path(_git(repo, "rev-parse", "--absolute-git-dir")) / "lfs" / "objects" / oid[:2] / oid[2:4] / oid
    obj.parent.mkdir(parents=True)
    obj.write_bytes(real)
    out = checkout(str(repo), sha, "splits[x].revision")
    assert (out / "tis_recovery" / "test_tomato-00000-of-00002.parquet").read_bytes() == real


# ------------------------------------------------------------------ the synthetic benchmark's marker


def test_data_from_an_older_generator_is_regenerated(tmp_path):
    from plantcad_flows.benchmark.synthetic import MARKER, ensure_benchmark, generator_version

    paths = ensure_benchmark(tmp_path, n_examples=4)
    marker = json.loads((tmp_path / MARKER).read_text())
    assert marker["generator"] == generator_version()
    some = paths[(TASK, SPLIT)]
    first = some.stat().st_ino
    ensure_benchmark(tmp_path, n_examples=4)
    assert some.stat().st_ino == first  # current: kept
    (tmp_path / MARKER).write_text(json.dumps({**marker, "generator": "an-older-one"}))
    ensure_benchmark(tmp_path, n_examples=4)
    assert some.stat().st_ino != first  # rewritten by this generator
    assert json.loads((tmp_path / MARKER).read_text())["generator"] == generator_version()


@pytest.mark.parametrize(
    "raw,waits",
    [(None, (2.0, 4.0, 8.0)), ("", (2.0, 4.0, 8.0)), ("5, 30,120", (5.0, 30.0, 120.0)), ("0", (0.0,))],
)
def test_task_retry_waits_come_from_the_environment(raw, waits, monkeypatch):
    from plantcad_flows.io.retry import task_retry_waits

    if raw is None:
        monkeypatch.delenv("PLANTCAD_TASK_RETRY_WAITS", raising=False)
    else:
        monkeypatch.setenv("PLANTCAD_TASK_RETRY_WAITS", raw)
    assert task_retry_waits() == waits


@pytest.mark.parametrize("raw", ["soon", "2,,4", "-1", "4000", ",".join(["1"] * 11)])
def test_bad_task_retry_waits_name_the_variable(raw, monkeypatch):
    from plantcad_flows.errors import ValidationError
    from plantcad_flows.io.retry import task_retry_waits

    monkeypatch.setenv("PLANTCAD_TASK_RETRY_WAITS", raw)
    with pytest.raises(ValidationError, match=f"PLANTCAD_TASK_RETRY_WAITS={raw!r}"):
        task_retry_waits()


@pytest.mark.parametrize("offline", [True, False], ids=["HF_HUB_OFFLINE", "no-network"])
def test_an_unreachable_hub_is_named_not_the_revision(offline, monkeypatch):
    """A hub id with no revision and no hub to ask: the line says the hub could not be reached
    and names the model's path, not `revision=None`."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import OfflineModeIsEnabled

    from plantcad_flows.identity.revisions import hub_sha
    from plantcad_flows.io import retry

    def unreachable(self, repo_id, **kw):
        if offline:
            raise OfflineModeIsEnabled("offline mode is enabled")
        raise ConnectionError("[Errno 111] Connection refused")

    monkeypatch.setattr(HfApi, "model_info", unreachable)
    monkeypatch.setattr(retry, "_sleep", lambda s: None)
    with pytest.raises(ValidationError) as e:
        hub_sha("org/model", None, "model", "models[m].revision")
    msg = str(e.value)
    assert msg.startswith("models[m].path='org/model': "), msg
    assert ("HF_HUB_OFFLINE is set" if offline else "could not be reached (ConnectionError") in msg, msg
    assert "revision=None" not in msg
