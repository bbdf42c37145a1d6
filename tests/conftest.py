"""Shared fixtures: one real Prefect server per test session (SQLite, 127.0.0.1, stopped by PID),
small synthetic benchmark data, small models built from configs, and a Prefect-client helper.

Tiers. Every test is marked by the real parts it needs (`prefect`, `ray`, `s3`, `browser`,
`faults`, `postgres`, `redis`), assigned here at collection from the fixtures it uses
(`PART_FIXTURES`, so a new test that asks for `prefect_server` is marked without saying so) and
from the modules that start a part inline (`PART_MODULES`). `make test-fast` runs the tests with
none of them (and not `slow`): the in-process tier. Under pytest-xdist (`make test`), tests that
share one server or Ray cluster are kept on one worker (`xdist_group`, `--dist loadgroup`); each
worker has its own session fixtures, on free ports and under its own temporary directory.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Each xdist worker's share of the cores, for the torch and BLAS thread pools of this process and
# of every process a test starts (CLI runs, deployment runs, Ray workers inherit it). Measured
# here: two CLI runs at once on 2 cores used 17-18 % less CPU with one thread each than with two.
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // _WORKERS)))

import servers  # noqa: E402

TEST_EXAMPLES = 16
_SHARED_OWNER = pytest.StashKey[bool]()
PARTS = ("prefect", "ray", "s3", "browser", "faults", "postgres", "redis")
# fixture -> the parts a test using it needs (fixtures of fixtures count: pytest resolves them)
PART_FIXTURES: dict[str, tuple[str, ...]] = {
    "prefect_server": ("prefect",),
    "stack": ("prefect",),
    "prefect_api": ("prefect",),
    "s3_endpoint": ("s3",),
    "s3_env": ("s3",),
    "moto": ("s3",),
    "s3_behind_proxy": ("s3",),
    "redis_url": ("redis",),
    "head": ("ray",),
    "ray_mod": ("ray",),
    "cluster_run": ("ray",),
    "postgres_url": ("postgres",),
    "postgres_server": ("postgres",),
    "pg_server": ("postgres", "prefect"),
}
# modules whose tests start a part inline (a CLI run that starts its own server, ray.init, ...)
PART_MODULES: dict[str, tuple[str, ...]] = {
    "test_cli": ("prefect",),
    "test_faults": ("faults", "prefect"),
    "test_shared_host": ("prefect",),
    "test_console": ("prefect",),
    "test_grid_flow": ("prefect",),
    "test_grid_lifecycle": ("prefect",),
    "test_ray_flow": ("ray", "prefect"),
    "test_ray_session": ("ray", "prefect"),
    "test_raycluster": ("ray",),
    "test_ui_browser": ("browser", "prefect"),
}
# tests that share one server or cluster run on one xdist worker (`--dist loadgroup`); so do the
# tests of a module whose module-scoped fixture starts a part (spread over workers, each worker
# would start it, and again whenever its next test came from another module)
GROUP_FIXTURES = {"stack": "stack", "head": "ray", "cluster_run": "ray", "ray_mod": "ray"}
GROUP_MODULES = {
    "test_faults": "faults",  # their uninterrupted reference run is made once, not once per worker
    "test_ray_flow": "ray",
    "test_ray_session": "ray",
    "test_raycluster": "ray",
    "test_postgres": "postgres",  # PostgreSQL and a Prefect server on it
    "test_s3_storage": "s3_storage",  # a moto server
    "test_sync": "sync",  # a moto server
    "test_kubernetes_job": "kubernetes_job",  # a rendered and validated Job
}


def pytest_configure(config):
    for part in PARTS:
        config.addinivalue_line(
            "markers", f"{part}: needs a real {part} part (assigned in tests/conftest.py)"
        )
    # One directory for the whole run, made by the controller before xdist starts its workers
    # (they inherit the environment): what the workers share, e.g. the migrated Prefect database.
    if not os.environ.get(servers.SHARED_ENV):
        import tempfile

        os.environ[servers.SHARED_ENV] = tempfile.mkdtemp(prefix="plantcad-tests-")
        config.stash[_SHARED_OWNER] = True


def pytest_unconfigure(config):
    if config.stash.get(_SHARED_OWNER, False):
        import shutil

        shutil.rmtree(os.environ.pop(servers.SHARED_ENV), ignore_errors=True)


@pytest.hookimpl(tryfirst=True)  # before xdist's own, which reads `xdist_group` to place the tests
def pytest_collection_modifyitems(config, items):
    for item in items:
        module = item.module.__name__.rsplit(".", 1)[-1] if item.module else ""
        names = set(getattr(item, "fixturenames", ()))
        parts = {p for f in names & PART_FIXTURES.keys() for p in PART_FIXTURES[f]}
        parts |= set(PART_MODULES.get(module, ()))
        for part in sorted(parts - {m.name for m in item.iter_markers()}):
            item.add_marker(getattr(pytest.mark, part))
        group = next((GROUP_FIXTURES[f] for f in sorted(names) if f in GROUP_FIXTURES), None)
        group = group or GROUP_MODULES.get(module)
        if group and not any(True for _ in item.iter_markers("xdist_group")):
            item.add_marker(pytest.mark.xdist_group(group))


def pytest_xdist_node_collection_finished(node, ids):
    """In the xdist controller: the grouped tests must reach it renamed `...@group`, or loadgroup
    spreads them over the workers without a word (pytest 9.2 with pytest-xdist 3.8 did)."""
    grouped = [i for i in ids if i.split("::")[0].rsplit("/", 1)[-1].removesuffix(".py") in GROUP_MODULES]
    if node.config.getvalue("dist") == "loadgroup" and grouped and not any("@" in i for i in grouped):
        pytest.exit(f"--dist loadgroup is not in effect: {grouped[0]} has no @group suffix", returncode=3)


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory):
    """A real `prefect server start` for the session; this process talks to it."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    tmp = tmp_path_factory.mktemp("prefect")
    url, proc = servers.start_prefect_server(tmp)
    old = os.environ.get("PREFECT_API_URL")
    os.environ["PREFECT_API_URL"] = url
    try:
        with temporary_settings(updates={PREFECT_API_URL: url}):
            yield url
    finally:
        from plantcad_flows.services.prefect_server import flush_prefect_logs

        flush_prefect_logs()
        servers.stop(proc)
        if old is None:
            os.environ.pop("PREFECT_API_URL", None)
        else:
            os.environ["PREFECT_API_URL"] = old


@pytest.fixture(scope="session")
def synthetic_dir(tmp_path_factory) -> Path:
    from plantcad_flows.benchmark.synthetic import generate_benchmark

    out = tmp_path_factory.mktemp("synthetic")
    generate_benchmark(out, seed=0, n_examples=TEST_EXAMPLES)
    return out


@pytest.fixture(scope="session")
def small_models(tmp_path_factory) -> dict[str, Path]:
    from model_factory import save_tiny_clm, save_tiny_mlm

    root = tmp_path_factory.mktemp("models")
    save_tiny_mlm(root / "mlm", max_len=512)
    save_tiny_clm(root / "clm", max_len=512)
    return {"mlm": root / "mlm", "clm": root / "clm"}


def eval_config(
    models: dict[str, Path],
    data: Path,
    prefix: Path | str,
    *,
    tasks=(
        ("conservation_within_andropogoneae", "test"),
        ("tis_recovery", "test_maize"),
        ("structural_variant_effect_prediction", "test"),
    ),
    ray: bool = False,
    **extra,
) -> dict:
    """A small config in the PlantCAD YAML format (as a dict)."""
    cfg = {
        "models": [
            {"path": str(models["mlm"]), "name": "mlm", "type": "mlm", "context_length": 512},
            {
                "path": str(models["clm"]),
                "name": "clm",
                "type": "clm",
                "context_length": 512,
                "motif_inference_mode": "fwd_rc_avg",
            },
        ],
        "splits": [{"task": t, "split": s, "path": str(data / t / f"{s}.parquet")} for t, s in tasks],
        "compute": {"device": "cpu", "batch_size": 8},
        "executor": {"prefix": str(prefix)},
        "ray": {"enabled": ray, "num_shards": 2},
    }
    cfg.update(extra)
    return cfg


def task_run_states(flow_run_id) -> dict[str, str]:
    """Task-run name -> state name, read back through the Prefect client."""
    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
    return {r.name: r.state.name for r in runs}


@pytest.fixture(scope="session")
def stack(tmp_path_factory, request):
    """The deployed stack (servers.get_stack), one per session whichever module asks first."""
    return servers.get_stack(tmp_path_factory, request)
