"""The house's rules that are not a single module's behaviour: a dry run stays light, results
persist without class paths, one helper per job, the registry listing, and force_run_failed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml
from conftest import eval_config

from plantcad_flows.config import EvalConfig, load_config
from plantcad_flows.layout.plan import CellStatus, build_cells, plan_cells
from plantcad_flows.layout.storage import is_local, mark_failed, to_path
from plantcad_flows.results.ledger import RunLedger
from plantcad_flows.secrets import redact, strip_url_credentials
from plantcad_flows.steps import PreparedSplit

CLI = Path(sys.executable).parent / "plantcad-flows"
REPO = Path(__file__).resolve().parents[1]


def test_dry_run_imports_neither_torch_ray_nor_prefect(tmp_path, synthetic_dir, small_models):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(eval_config(small_models, synthetic_dir, tmp_path / "out")))
    probe = (
        "import sys\n"
        "from plantcad_flows.cli import main\n"
        f"rc = main(['eval', {str(path)!r}, '--dry-run'])\n"
        "heavy = sorted(m for m in ('torch', 'ray', 'prefect', 'transformers', 'prefect_ray') if m in sys.modules)\n"
        "print('HEAVY', heavy, 'RC', rc)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, cwd=tmp_path, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert "to run" in out.stdout
    assert "HEAVY [] RC 0" in out.stdout


def test_tasks_command_lists_the_registry():
    out = subprocess.run([str(CLI), "tasks"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].split()[:2] == ["task", "family"]
    body = [line for line in lines[2:] if line and not line.startswith("12 tasks")]
    assert len(body) == 12
    tis = next(line for line in body if line.startswith("tis_recovery "))
    assert "motif_recovery" in tis and "[4094, 4095, 4096]" in tis and "motif_accuracy" in tis
    assert "test_maize, test_tomato" in tis
    sv = next(line for line in body if line.startswith("structural_variant_effect_prediction"))
    assert "auprc" in sv and "auroc" not in sv


def test_a_step_found_complete_returns_a_cached_state():
    """One authority for "done": the step's files. A task whose outputs were complete says so to
    the UI with a Completed state named Cached that carries the same result."""
    from tasks.policy import reused

    prepared = PreparedSplit(key="k", dir="/d", examples="/d/examples.parquet", num_examples=3)
    assert reused(prepared, False) is prepared
    state = reused(prepared, True)
    assert state.is_completed() and state.name == "Cached" and state.data is prepared


def test_one_locality_test_for_every_backend():
    assert (
        is_local("outputs/x") and is_local("/abs/x") and is_local("file:///abs/x") and is_local("local:///x")
    )
    assert not is_local("s3://b/x") and not is_local("hf://datasets/o/r")
    assert str(to_path("file:///tmp/x")) == "/tmp/x" and str(to_path("local:///tmp/y")) == "/tmp/y"


def test_secrets_are_stripped_from_urls_and_text():
    assert (
        strip_url_credentials("https://user:ghp_TOKEN123@github.com/o/r.git") == "https://github.com/o/r.git"
    )
    assert strip_url_credentials("http://minio:9000") == "http://minio:9000"
    assert strip_url_credentials("/local/path") == "/local/path"
    env = {"HF_TOKEN": "hf_SECRETVALUE", "HOME": "/root"}
    text = "cloning https://u:pw12345@host/r.git with hf_SECRETVALUE in /root"
    assert redact(text, env) == "cloning https://host/r.git with <redacted> in /root"


def test_force_run_failed_decides_whether_a_failed_cell_runs_again(tmp_path, synthetic_dir, small_models):
    cfg = EvalConfig.model_validate(eval_config(small_models, synthetic_dir, tmp_path / "out"))
    cell = build_cells(cfg)[0]
    mark_failed(to_path(cell.dir), "RuntimeError: CUDA error on node-7")
    planned = plan_cells(cfg)
    assert planned[0].status == CellStatus.FAILED_BEFORE
    assert planned[0].reason == "RuntimeError: CUDA error on node-7"

    retry = RunLedger(planned, retry_failed=True)
    assert cell in retry.to_score and cell.id not in retry.results

    report = RunLedger(planned, retry_failed=False)
    assert cell not in report.to_score
    failed = report.results[cell.id]
    assert failed.status == "failed" and "CUDA error on node-7" in failed.reason
    assert "force_run_failed" in failed.reason
    # the other cells are unaffected
    assert len(report.to_score) == len(retry.to_score) - 1


def test_force_run_failed_round_trips_through_yaml(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "models": [{"path": str(tmp_path)}],
                "splits": [{"task": "tis_recovery", "split": "test_maize", "path": str(tmp_path)}],
                "executor": {"prefix": str(tmp_path / "o"), "force_run_failed": False},
            }
        )
    )
    assert load_config(path).executor.force_run_failed is False


def test_a_full_disk_is_not_retried():
    """Waiting does not free space: ENOSPC is permanent, however it is wrapped."""
    import errno

    from plantcad_flows.errors import DiskFullError
    from tasks.policy import is_transient

    def wrapped(inner: BaseException) -> BaseException:
        try:
            try:
                raise inner
            except BaseException as e:
                raise RuntimeError("writing shard-00001 failed") from e
        except RuntimeError as outer:
            return outer

    assert not is_transient(OSError(errno.ENOSPC, "No space left on device"))
    assert not is_transient(wrapped(OSError(errno.EDQUOT, "Disk quota exceeded")))
    assert not is_transient(wrapped(OSError("IOError: No space left on device")))  # pyarrow's
    assert not is_transient(DiskFullError("no space left on device: cannot write x"))
    assert is_transient(wrapped(OSError(errno.ECONNRESET, "Connection reset by peer")))
    assert is_transient(ConnectionError("refused"))
