"""Time from command to exit for the bad-input cases of issue 18 (a model that cannot work, a
setting that would do nothing), each run as a user runs it: `plantcad-flows eval CONFIG` in a
fresh process, with the demo's synthetic data and the shipped tiny models (copied and edited as
the cases in `tests/test_trust.py` edit them). A hub model's case runs `python -c` with the fake
hub of the tests installed first (the hub itself cannot be reached from here), so its figure
includes that import as well. Nothing is asserted; per case it prints the exit status, the
seconds from start to exit, and the one line on stderr.

    .venv/bin/python benchmarks/preflight_timing.py
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
from test_bad_input import _base  # noqa: E402
from test_trust import (  # noqa: E402
    _causal_as_mlm,
    _context,
    _local_revision,
    _no_mask_token,
    _unknown_architecture,
)

from plantcad_flows.benchmark.synthetic import generate_benchmark  # noqa: E402

ASSETS = REPO / "plantcad_flows" / "assets" / "models"
CLI = Path(sys.executable).parent / "plantcad-flows"

HUB_DRIVER = """
import sys
from pathlib import Path
from _pytest.monkeypatch import MonkeyPatch
sys.path.insert(0, {tests!r})
from test_trust import serve_hub_model
from plantcad_flows.cli import main
serve_hub_model(MonkeyPatch(), Path({tmp!r}), {{"mlm": Path({mlm!r})}}, {changes!r})
sys.exit(main(["eval", {config!r}]))
"""


def _checkpoint_revision(cfg, tmp_path, **_):
    run = tmp_path / "run"
    run.mkdir(exist_ok=True)
    cfg["checkpoints"] = [{"path": str(run), "name": "run", "revision": "main", "context_length": 512}]
    return cfg


LOCAL = {
    "context-over-position-limit": _context(1024),
    "unknown-architecture": _unknown_architecture,
    "causal-lm-as-mlm": _causal_as_mlm,
    "mlm-without-mask-token": _no_mask_token,
    "revision-on-local-model": _local_revision,
    "revision-on-local-checkpoint-run": _checkpoint_revision,
}
HUB = {
    "hub-context-over-position-limit": ({}, {"context_length": 2048}),
    "hub-unknown-architecture": ({"model_type": "dnaformer"}, {}),
    "hub-ships-code-untrusted": ({"auto_map": {"AutoModelForMaskedLM": "m.X"}}, {}),
}


def _timed(cmd: list[str], cwd: Path, env: dict) -> tuple[int, float, str]:
    t0 = time.perf_counter()
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    return done.returncode, time.perf_counter() - t0, done.stderr.strip().splitlines()[-1:]


def main() -> None:
    tmp = Path(tempfile.mkdtemp(prefix="preflight-timing-"))
    data = tmp / "synthetic"
    generate_benchmark(data, seed=0, n_examples=16)
    models = {"mlm": ASSETS / "tiny-mlm", "clm": ASSETS / "tiny-clm"}
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(PYTHONPATH=str(REPO), HF_HUB_OFFLINE="1", XDG_CACHE_HOME=str(tmp / "cache"))
    env["PREFECT_API_URL"] = "http://127.0.0.1:9/api"  # a case that slipped through would fail there
    for name, edit in LOCAL.items():
        case = tmp / name
        case.mkdir()
        cfg = edit(_base(models, data, case / "evals"), tmp_path=case, small_models=models)
        path = case / "bad.yaml"
        path.write_text(yaml.safe_dump(cfg))
        code, seconds, line = _timed([str(CLI), "eval", str(path)], case, env)
        print(f"{name}: exit {code} in {seconds:.2f}s: {line[0] if line else ''}", flush=True)
    for name, (changes, model) in HUB.items():
        case = tmp / name
        case.mkdir()
        cfg = _base(models, data, case / "evals")
        cfg["models"][0].update(path="org/dna-mlm", name="hub-mlm", **model)
        path = case / "bad.yaml"
        path.write_text(yaml.safe_dump(cfg))
        code_text = HUB_DRIVER.format(
            tests=str(REPO / "tests"),
            tmp=str(case),
            mlm=str(models["mlm"]),
            changes=changes,
            config=str(path),
        )
        code, seconds, line = _timed([sys.executable, "-c", code_text], case, env)
        print(
            f"{name}: exit {code} in {seconds:.2f}s (python -c, fake hub): {line[0] if line else ''}",
            flush=True,
        )
    bad_env = {**env, "PLANTCAD_API_LOST_AFTER": "soon"}
    case = tmp / "lost-after-env"
    case.mkdir()
    path = case / "ok.yaml"
    path.write_text(yaml.safe_dump(_base(models, data, case / "evals")))
    code, seconds, line = _timed([str(CLI), "eval", str(path)], case, bad_env)
    print(f"lost-after-not-a-number: exit {code} in {seconds:.2f}s: {line[0] if line else ''}", flush=True)
    print(f"(files under {tmp})")


if __name__ == "__main__":
    main()
