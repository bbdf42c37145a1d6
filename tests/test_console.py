"""What a run's terminal shows: a few lines, a progress line, one line per failed cell, and the
path of a log file that holds everything else (Prefect's task-run lines, the tracebacks)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import yaml
from conftest import eval_config
from servers import run_cli


def _broken_weights(model: Path, dest: Path) -> Path:
    """`model` with every tensor one element long: its header is whole, so the plan-time check
    passes, and loading fails on the shapes in the middle of the run."""
    import torch
    from safetensors.torch import load_file, save_file

    shutil.copytree(model, dest)
    tensors = load_file(dest / "model.safetensors")
    save_file({k: torch.zeros(1, dtype=v.dtype) for k, v in tensors.items()}, dest / "model.safetensors")
    return dest


def test_a_run_prints_a_few_lines_and_one_per_failed_cell(
    prefect_server, small_models, synthetic_dir, tmp_path
):
    broken = _broken_weights(small_models["mlm"], tmp_path / "broken")
    cfg = eval_config(small_models, synthetic_dir, tmp_path / "out", tasks=(("tis_recovery", "test_maize"),))
    cfg["models"] = [cfg["models"][0], {**cfg["models"][0], "path": str(broken), "name": "broken"}]
    path = tmp_path / "eval.yaml"
    path.write_text(yaml.safe_dump(cfg))
    proc = run_cli("eval", path, "--no-ray", cwd=tmp_path, api_url=prefect_server, timeout=600)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out[-4000:]
    assert "Task run" not in out and "Traceback" not in out and "Finished in state" not in out, out
    failed = [ln for ln in proc.stderr.splitlines() if ln.startswith("  failed ")]
    assert len(failed) == 1 and failed[0].startswith("  failed broken/tis_recovery/test_maize: "), proc.stderr
    assert f"cannot load the weights in {broken}: RuntimeError" in failed[0], failed
    log = Path(re.search(r"full log: (\S+)", out).group(1))
    assert log.is_file() and log.parent == tmp_path / "out" / "logs"
    text = log.read_text()
    assert "Finished in state" in text and "Traceback" in text
    assert "progress not updated" not in text  # the per-shard updates (artifact, line) went through
    assert re.search(r"100% \| cells 2/2 \(1 failed\) \| shards \d+/\d+ \| \d+/\d+ examples", out), out
    assert len(out.splitlines()) < 30, out
