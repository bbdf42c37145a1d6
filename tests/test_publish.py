"""Publishing a run to the Hugging Face hub, against a hub on loopback (`hub_server.HubServer`,
reached through `HF_ENDPOINT`; `huggingface_hub`'s own client code runs unchanged).

What is checked is what would be sent: the paths and bytes of the one commit, LFS uploads of
the parquet files, that a second publish of the same run sends no commit, that a second run
adds its files and changes only the index and the card, and that the token travels only in the
`Authorization` header: never in a file, a log line, the CLI's output or the report. Bad input
exits 2 with one line before any request reaches the hub.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging

import pandas as pd
import pytest
import yaml
from hub_server import HubServer

from plantcad_flows.config import EvalConfig, PublishConfig
from plantcad_flows.layout.integrity import write_parquet_recorded
from plantcad_flows.layout.plan import PREDICTIONS
from plantcad_flows.layout.storage import mark_complete, to_path, write_bytes_atomic, write_json_atomic
from plantcad_flows.publish.bundle import collect_run
from plantcad_flows.publish.card import merge, read_index, render_card, run_entry
from plantcad_flows.publish.changes import RemoteFile, git_blob_oid, plan_changes
from plantcad_flows.publish.hub import publish_run
from plantcad_flows.results import schema
from plantcad_flows.results.history import history_rows, write_history
from plantcad_flows.results.table import CellResult, write_results

TOKEN = "hf_TESTtokenDoNotLeak0123456789"
REPO = "plantcad/zero-shot-results"


def make_run(prefix, run: str, step: int = 1000, day: int = 1, leaderboard: bool = False) -> None:
    """A finished run under `prefix`, written by the same functions the flow uses: two cells
    with predictions (recorded in their `_SUCCESS`), results, history, summary and config."""
    results = []
    for task, split in (("tis_recovery", "test_maize"), ("conservation_within_andropogoneae", "test")):
        model = f"pc2@step-{step}"
        cell_dir = to_path(prefix) / f"score_cell-step-{step}-{task}-{split}-abc{step}"
        preds = pd.DataFrame({"row_index": [0, 1, 2], "label": [0, 1, 1], "score": [0.1, 0.9, 0.7]})
        record = write_parquet_recorded(cell_dir / PREDICTIONS, preds)
        write_json_atomic(cell_dir / "metrics.json", {"auroc": 1.0})
        write_json_atomic(cell_dir / "intervals-b100-s0.json", {"auroc": [0.5, 1.0]})
        mark_complete(cell_dir, {"step": "score_cell", "task": task}, {"files": {PREDICTIONS: record}})
        results.append(
            CellResult(
                cell_id=f"{model}/{task}/{split}",
                model=model,
                task=task,
                split=split,
                dataset="plantcad/PlantCAD2_zero_shot_tasks",
                family="motif_recovery",
                status="completed",
                metrics={"auroc": 1.0, "num_examples": 3},
                output_dir=str(cell_dir),
                cell_key=f"key-{step}-{task}",
                model_revision=f"sha-{step}",
                dataset_revision="data-sha",
                step=step,
                intervals={"auroc": [0.5, 1.0]},
            )
        )
    run_dir = to_path(prefix) / "runs" / run
    write_results(str(run_dir), results)
    write_bytes_atomic(run_dir / "summary.md", f"# {run}\n".encode())
    write_json_atomic(run_dir / "config.json", {"sampling": {"seed": 0, "max_size": 10000, "rate": None}})
    when = pd.Timestamp(f"2026-12-0{day}T02:00:00Z")
    write_history(str(prefix), run, history_rows(results, f"id-{run}", run, time=when, plan="plan123"))
    if leaderboard:
        for model in ("pc2", "other"):
            board = run_dir / "leaderboard" / model / "8192"
            write_bytes_atomic(board / "leaderboard.tsv", b"model\ttask\tvalue\n")
            write_json_atomic(board / "result.json", {"model": model})


@pytest.fixture
def hub(monkeypatch):
    import huggingface_hub.constants

    with HubServer(TOKEN) as server:
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        monkeypatch.setenv("HF_TOKEN", TOKEN)
        # the hub's Xet transfer needs its CAS service; the LFS protocol is what this server speaks
        monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_DISABLE_XET", True)
        yield server


def _commit_files(lines: list[dict]) -> dict[str, dict]:
    return {line["value"]["path"]: line for line in lines[1:]}


def _assert_no_token(hub: HubServer) -> None:
    """The token is in each request's Authorization header (not in LFS uploads), nowhere else."""
    for r in hub.state.requests:
        assert TOKEN.encode() not in r.body, r.path
        assert TOKEN not in r.path
        for name, value in r.headers.items():
            assert TOKEN not in value or (name.lower() == "authorization" and value == f"Bearer {TOKEN}")
    for lines in hub.state.commits:
        for line in lines[1:]:
            if line["key"] == "file":
                assert TOKEN.encode() not in base64.b64decode(line["value"]["content"])
    for repo in hub.state.repos.values():
        for path, data in repo.files.items():
            assert TOKEN.encode() not in data, path


def test_first_publish_is_one_commit_of_exactly_the_run(tmp_path, hub, caplog):
    make_run(tmp_path, "night-1", leaderboard=True)
    target = PublishConfig(repo=REPO, path_in_repo="results/step-{step}/leaderboard-seed{seed}-n{max_size}")
    caplog.set_level(logging.DEBUG)
    report = publish_run(collect_run(str(tmp_path), "night-1"), target, TOKEN)

    folder = "results/step-1000/leaderboard-seed0-n10000"
    assert report.folder == folder and report.commit is not None
    [commit] = hub.state.commits
    sent = _commit_files(commit)
    cells = [
        f"score_cell-step-1000-{t}-abc1000"
        for t in ("conservation_within_andropogoneae-test", "tis_recovery-test_maize")
    ]
    expected = {
        "README.md",
        "runs.json",
        *(
            f"{folder}/{n}"
            for n in ("results.json", "results.parquet", "summary.md", "config.json", "identities.json")
        ),
        *(
            f"{folder}/leaderboard/{m}/8192/{f}"
            for m in ("pc2", "other")
            for f in ("leaderboard.tsv", "result.json")
        ),
        *(
            f"{folder}/cells/{c}/{f}"
            for c in cells
            for f in ("predictions.parquet", "metrics.json", "step_info.json", "intervals-b100-s0.json")
        ),
    }
    assert set(sent) == expected
    assert sorted(report.uploaded) == sorted(expected) and report.unchanged == 0
    # every file is the run's bytes: parquet through LFS (sha256 + the uploaded blob), the rest inline
    for path, line in sent.items():
        if path.startswith(folder + "/"):
            rel = path[len(folder) + 1 :]
            local = tmp_path / (
                "runs/night-1/" + rel if not rel.startswith("cells/") else rel[len("cells/") :]
            )
            if rel.endswith("step_info.json"):
                local = local.with_name(".step_info.json")
            if rel == "identities.json":
                continue
            data = local.read_bytes()
            if path.endswith(".parquet"):
                assert line["key"] == "lfsFile" and line["value"]["oid"] == hashlib.sha256(data).hexdigest()
                assert hub.state.blobs[line["value"]["oid"]] == data
            else:
                assert line["key"] == "file" and base64.b64decode(line["value"]["content"]) == data
    assert hub.repo(REPO).private is False
    identities = json.loads(hub.repo(REPO).files[f"{folder}/identities.json"])
    assert {c["model_revision"] for c in identities["cells"]} == {"sha-1000"}
    assert identities["code_versions"] and identities["plan"] == "plan123"
    # the card: one split per run plus latest, for the results and for each cell's predictions
    card = hub.repo(REPO).files["README.md"].decode()
    meta = yaml.safe_load(card.split("---")[1])
    results = next(c for c in meta["configs"] if c["config_name"] == "results")
    assert results["data_files"] == [
        {"split": "night_1", "path": f"{folder}/results.parquet"},
        {"split": "latest", "path": f"{folder}/results.parquet"},
    ]
    assert len(meta["configs"]) == 3
    _assert_no_token(hub)
    assert not [r for r in caplog.records if TOKEN in r.getMessage()]


def test_publishing_the_same_run_again_sends_nothing(tmp_path, hub):
    make_run(tmp_path, "night-1")
    target = PublishConfig(repo=REPO)
    publish_run(collect_run(str(tmp_path), "night-1"), target, TOKEN)
    before = {p: d for p, d in hub.repo(REPO).files.items()}
    seen = len(hub.state.requests)

    again = publish_run(collect_run(str(tmp_path), "night-1"), target, TOKEN)
    assert again.commit is None and again.uploaded == [] and again.unchanged == len(before)
    assert len(hub.state.commits) == 1
    later = hub.state.requests[seen:]
    assert not [r for r in later if r.method == "PUT" or "/preupload/" in r.path or "/commit/" in r.path]
    assert hub.repo(REPO).files == before
    assert "nothing changed" in again.line()


def test_a_second_run_adds_its_folder_and_moves_latest(tmp_path, hub):
    make_run(tmp_path, "night-1", step=1000, day=1)
    make_run(tmp_path, "night-2", step=2000, day=2)
    target = PublishConfig(repo=REPO, path_in_repo="results/step-{step}/{run}")
    publish_run(collect_run(str(tmp_path), "night-1"), target, TOKEN)
    second = publish_run(collect_run(str(tmp_path), "night-2"), target, TOKEN)

    assert len(hub.state.commits) == 2
    sent = set(_commit_files(hub.state.commits[1]))
    assert {"README.md", "runs.json"} <= sent
    assert all(p.startswith("results/step-2000/night-2/") for p in sent - {"README.md", "runs.json"})
    assert second.unchanged == 0
    index = json.loads(hub.repo(REPO).files["runs.json"])
    assert [e["run"] for e in index["runs"]] == ["night-1", "night-2"]
    meta = yaml.safe_load(hub.repo(REPO).files["README.md"].decode().split("---")[1])
    results = next(c for c in meta["configs"] if c["config_name"] == "results")
    assert [f["split"] for f in results["data_files"]] == ["night_1", "night_2", "latest"]
    assert results["data_files"][-1]["path"] == "results/step-2000/night-2/results.parquet"
    # publishing the older run again changes nothing: the card does not depend on the order
    assert publish_run(collect_run(str(tmp_path), "night-1"), target, TOKEN).commit is None
    _assert_no_token(hub)


def test_a_changed_file_is_sent_alone_and_a_stale_one_deleted(tmp_path, hub):
    make_run(tmp_path, "night-1", leaderboard=True)
    target = PublishConfig(repo=REPO)
    publish_run(collect_run(str(tmp_path), "night-1"), target, TOKEN)
    write_bytes_atomic(to_path(tmp_path) / "runs/night-1/summary.md", b"# night-1, edited\n")
    import shutil

    shutil.rmtree(tmp_path / "runs/night-1/leaderboard/other")
    report = publish_run(collect_run(str(tmp_path), "night-1"), target, TOKEN)
    assert report.uploaded == ["runs/night-1/summary.md"]
    assert report.deleted == [
        f"runs/night-1/leaderboard/other/8192/{f}" for f in ("leaderboard.tsv", "result.json")
    ]
    lines = hub.state.commits[1]
    assert [(line["key"], line["value"]["path"]) for line in lines[1:]] == [
        ("file", "runs/night-1/summary.md"),
        *(("deletedFile", p) for p in report.deleted),
    ]


def test_a_publish_that_raced_another_is_refused_then_retried(tmp_path, hub, monkeypatch):
    """Two publishes merging the run index at once: the one whose commit comes second was
    computed on a commit that is no longer the head; the hub refuses it, and publishing again
    keeps both runs."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    make_run(tmp_path, "night-1", step=1000, day=1)
    make_run(tmp_path, "night-2", step=2000, day=2)
    target = PublishConfig(repo=REPO)
    original = HfApi.create_commit

    def racing(self, *args, **kwargs):
        monkeypatch.setattr(HfApi, "create_commit", original)
        publish_run(collect_run(str(tmp_path), "night-2"), target, TOKEN)  # lands first
        return original(self, *args, **kwargs)

    publish_run(collect_run(str(tmp_path), "night-1"), target, TOKEN)  # creates the repo
    make_run(tmp_path, "night-1", step=1000, day=1, leaderboard=True)  # so night-1 has news
    monkeypatch.setattr(HfApi, "create_commit", racing)
    with pytest.raises(HfHubHTTPError) as e:
        publish_run(collect_run(str(tmp_path), "night-1"), target, TOKEN)
    assert e.value.response.status_code == 412
    publish_run(collect_run(str(tmp_path), "night-1"), target, TOKEN)  # the task's retry
    index = json.loads(hub.repo(REPO).files["runs.json"])
    assert [e["run"] for e in index["runs"]] == ["night-1", "night-2"]
    assert len(hub.state.commits) == 3


def test_a_model_repo_gets_the_same_layout(tmp_path, hub):
    """A model repo (the checkpoints' own repo, say): the hub's model routes, same files."""
    make_run(tmp_path, "night-1")
    target = PublishConfig(repo="plantcad/pc2-small", repo_type="model", path_in_repo="evals/{run}")
    with pytest.warns(UserWarning, match="data file"):  # huggingface_hub's note on parquet in a model repo
        first = publish_run(collect_run(str(tmp_path), "night-1"), target, TOKEN)
    assert first.commit and ("model", "plantcad/pc2-small") in hub.state.repos
    files = hub.repo("plantcad/pc2-small", "model").files
    assert "evals/night-1/results.parquet" in files and "README.md" in files
    assert publish_run(collect_run(str(tmp_path), "night-1"), target, TOKEN).commit is None


def test_changes_compare_content_by_blob_id_or_lfs_sha256():
    files = {"a.json": b"{}", "b.parquet": b"PAR1", "run/c.md": b"x"}
    remote = {
        "a.json": RemoteFile("a.json", git_blob_oid(b"{}")),
        "b.parquet": RemoteFile("b.parquet", "pointer-oid", hashlib.sha256(b"PAR1").hexdigest()),
        "run/c.md": RemoteFile("run/c.md", git_blob_oid(b"old")),
    }
    changes = plan_changes(files, remote, ["run/c.md", "run/gone.md", "elsewhere/x"], "run")
    assert changes.upload == ["run/c.md"] and changes.delete == ["run/gone.md"] and changes.unchanged == 2
    # git's own id of "hello\n" (git hash-object)
    assert git_blob_oid(b"hello\n") == "ce013625030ba8dba906f756967f9e9ca394464a"


def test_card_is_a_function_of_the_index(tmp_path):
    make_run(tmp_path, "night-1", step=1000, day=1)
    make_run(tmp_path, "night-2", step=2000, day=2)
    one, two = (collect_run(str(tmp_path), r) for r in ("night-1", "night-2"))
    a = merge(merge(read_index(None), run_entry(one, "r/1")), run_entry(two, "r/2"))
    b = merge(merge(read_index(None), run_entry(two, "r/2")), run_entry(one, "r/1"))
    assert a == b and render_card(a, REPO) == render_card(b, REPO)
    # a run published into an occupied folder replaces the run that was there
    c = merge(a, run_entry(two, "r/1"))
    assert [(e["run"], e["folder"]) for e in c["runs"]] == [("night-2", "r/1")]
    # split names stay distinct: `night_1` and `latest` are taken
    one.run = "night_1"
    d = merge(a, run_entry(one, "r/3"))
    assert [e["split"] for e in d["runs"]] == ["night_1", "night_1_2", "night_2"]
    one.run = "latest"
    assert merge(read_index(None), run_entry(one, "r/4"))["runs"][0]["split"] == "latest_2"


def test_publish_section_is_checked_and_never_holds_a_token():
    from plantcad_flows.cli.config_errors import config_error_lines

    for section in (
        {"repo": REPO, "token": TOKEN},
        {"repo": REPO, "hf_token": TOKEN},
        {"repo": REPO, "token_secret": TOKEN},
    ):
        with pytest.raises(Exception) as e:
            EvalConfig.model_validate(_config(publish=section))
        [line] = config_error_lines(e.value)  # what the CLI prints
        assert TOKEN not in line and "publish." in line and "<redacted>" in line
    with pytest.raises(Exception) as e:
        PublishConfig(repo=REPO, token_secret=TOKEN)
    assert TOKEN not in str(e.value)
    for bad, field in (
        ({"repo": "no-slash"}, "publish.repo"),
        ({"repo": REPO, "repo_type": "space"}, "publish.repo_type"),
        ({"repo": REPO, "path_in_repo": "x/{nope}"}, "publish.path_in_repo"),
        ({"repo": REPO, "path_in_repo": "../up"}, "publish.path_in_repo"),
    ):
        with pytest.raises(Exception, match=field.replace(".", r"\.")):
            PublishConfig(**bad)


def _config(**extra) -> dict:
    return {
        "models": [{"path": "org/m", "name": "m", "type": "mlm", "revision": "abc"}],
        "splits": [{"task": "conservation_within_andropogoneae", "split": "test", "path": "x.parquet"}],
        **extra,
    }


def _cli(capsys, *args: str) -> tuple[int, str, str]:
    from plantcad_flows.cli import main

    rc = main(["publish", *args])
    out, err = capsys.readouterr()
    return rc, out, err


def test_cli_publishes_once_then_sends_nothing(tmp_path, hub, capsys):
    make_run(tmp_path, "night-1", leaderboard=True)
    args = (
        "--repo",
        REPO,
        "--prefix",
        str(tmp_path),
        "--path-in-repo",
        "results/step-{step}/{run}",
        "--private",
    )
    rc, out, err = _cli(capsys, *args)
    assert rc == 0, err
    assert out.splitlines()[0].startswith(
        f"run night-1 published to dataset {REPO}/results/step-1000/night-1: "
    )
    assert "  + results/step-1000/night-1/leaderboard/pc2/8192/leaderboard.tsv" in out.splitlines()
    assert hub.repo(REPO).private is True
    rc, out, err = _cli(capsys, *args, "--run", "night-1")
    assert rc == 0 and out.startswith("run night-1: nothing changed") and len(hub.state.commits) == 1
    _assert_no_token(hub)
    assert TOKEN not in out + err


BAD_INPUT = [
    (("--repo-type", "space"), "--repo-type='space': unknown name"),
    (("--repo", "no-org"), "--repo='no-org': expected ORG/NAME"),
    (("--repo", "org/na me"), "--repo='org/na me': expected ORG/NAME"),
    (("--run", "night-9"), "--run='night-9': no such run under"),
    (("--path-in-repo", "results/{checkpoint}"), "--path-in-repo placeholder='{checkpoint}': unknown name"),
    (("--token-secret", TOKEN), "--token-secret='<redacted>': expected the name of a Prefect Secret block"),
    ((), "HF_TOKEN=None: no Hugging Face token"),
]


@pytest.mark.parametrize("args,line", BAD_INPUT, ids=[line.split(":")[0] for _, line in BAD_INPUT])
def test_cli_bad_input_exits_2_with_one_line_before_any_request(
    tmp_path, hub, capsys, monkeypatch, args, line
):
    make_run(tmp_path, "night-1")
    if not args:  # no token anywhere
        monkeypatch.delenv("HF_TOKEN")
        monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
    base = {"--repo": REPO, "--prefix": str(tmp_path)}
    base.update(dict(zip(args[::2], args[1::2])))
    rc, out, err = _cli(capsys, *(x for kv in base.items() for x in kv))
    assert rc == 2 and out == ""
    assert len(err.splitlines()) == 1 and err.startswith(line), err
    assert TOKEN not in err
    assert hub.state.requests == []


def test_cli_step_placeholder_needs_a_run_of_one_step(tmp_path, hub, capsys):
    make_run(tmp_path, "night-1")
    history = tmp_path / "history" / "night-1.parquet"
    frame = pd.read_parquet(history)
    frame.loc[0, "step"] = 5
    write_bytes_atomic(to_path(history), schema.parquet_bytes(frame))
    rc, _, err = _cli(capsys, "--repo", REPO, "--prefix", str(tmp_path), "--path-in-repo", "r/step-{step}")
    assert rc == 2 and err.startswith(
        "--path-in-repo='r/step-{step}': {step} needs a run of one checkpoint step"
    )
    assert hub.state.requests == []


def test_cli_publishes_the_newest_run_by_default(tmp_path, hub, capsys):
    make_run(tmp_path, "b-older", step=1000, day=1)
    make_run(tmp_path, "a-newer", step=2000, day=2)
    rc, out, _ = _cli(capsys, "--repo", REPO, "--prefix", str(tmp_path))
    assert rc == 0 and out.startswith("run a-newer published")


@pytest.mark.slow
def test_a_run_with_publish_section_publishes_with_the_secret_block_token(
    prefect_server, small_models, synthetic_dir, tmp_path, hub, monkeypatch, capsys
):
    """The flow end to end: the token only in a Prefect Secret block (no HF_TOKEN), the run
    published once; a second run of the same config (every cell cached) sends no commit. The
    token is in no uploaded file, no log line, no artifact and no task run of the server."""
    from conftest import eval_config
    from prefect import get_client
    from prefect.blocks.system import Secret
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId, LogFilter, LogFilterFlowRunId

    from flows.zero_shot_eval import zero_shot_eval

    monkeypatch.delenv("HF_TOKEN")
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
    Secret(value=TOKEN).save("publish-test-token", overwrite=True)
    cfg = eval_config(small_models, synthetic_dir, tmp_path / "out", tasks=(("tis_recovery", "test_maize"),))
    cfg["models"] = cfg["models"][:1]
    cfg["ray"]["num_shards"] = 1
    cfg["publish"] = {"repo": REPO, "path_in_repo": "nightly/{run}", "token_secret": "publish-test-token"}

    runs = []
    for _ in range(2):
        state = zero_shot_eval(EvalConfig.model_validate(cfg), return_state=True)
        assert state.is_completed(), state.message
        runs.append(state.state_details.flow_run_id)
    with get_client(sync_client=True) as client:
        names = [client.read_flow_run(r).name for r in runs]
    # the second run (every cell cached) is another run: its own folder, the index and the card
    assert len(hub.state.commits) == 2
    second = set(_commit_files(hub.state.commits[1])) - {"README.md", "runs.json"}
    assert second and all(p.startswith(f"nightly/{names[1]}/") for p in second)
    # the CLI reads the same Secret block; publishing the second run again sends nothing
    args = ("--repo", REPO, "--prefix", str(tmp_path / "out"), "--path-in-repo", "nightly/{run}")
    capsys.readouterr()
    rc, out, err = _cli(capsys, *args, "--token-secret", "publish-test-token", "--run", names[1])
    assert rc == 0 and out.startswith(f"run {names[1]}: nothing changed"), err
    rc, out, err = _cli(capsys, *args, "--token-secret", "no-such-block")
    assert rc == 2 and err == "--token-secret='no-such-block': no such Prefect Secret block\n"
    assert len(hub.state.commits) == 2 and TOKEN not in out + err
    files = hub.repo(REPO).files
    assert any(p.endswith("/predictions.parquet") for p in files)
    assert any(p.endswith("/config.json") for p in files)
    _assert_no_token(hub)

    with get_client(sync_client=True) as client:
        arts = client.read_artifacts()
        keys = [a.key for a in arts]
        assert any(k and k.startswith("zero-shot-publish-") for k in keys)
        assert TOKEN not in json.dumps([a.model_dump(mode="json") for a in arts], default=str)
        logs = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=runs)))
        messages = [log.message for log in logs]
        assert any("published to dataset" in m for m in messages)
        assert not [m for m in messages if TOKEN in m]
        task_runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=runs)))
        flow_runs = client.read_flow_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=runs)))
        shown = [r.model_dump(mode="json") for r in [*task_runs, *flow_runs]]
        assert TOKEN not in json.dumps(shown, default=str)
