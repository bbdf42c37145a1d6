"""A Prefect server on a local PostgreSQL (`plantcad-flows server --database postgres`): one
end-to-end eval and one grid run against it, read back through the API and in PostgreSQL itself.

The cluster is initialised and started here, under a temporary directory, on a free loopback
port, and stopped by `pg_ctl` (its PID file) at the end; the Prefect server is stopped by its
PID. Skipped, saying what to install, when the host has no PostgreSQL server binaries.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml
from conftest import eval_config
from servers import REPO, api, client_env, stop

from plantcad_flows.errors import ValidationError
from plantcad_flows.services import postgres
from plantcad_flows.services.prefect_server import start_server

CLI = Path(sys.executable).parent / "plantcad-flows"


def test_local_settings_agree_with_the_production_compose_file():
    compose = yaml.safe_load((REPO / "infra/server/docker-compose.yaml").read_text())
    env = compose["services"]["prefect-server"]["environment"]
    local = postgres.server_settings("postgresql+asyncpg://u:p@h:1/prefect")
    for key in (
        "PREFECT_SERVER_DATABASE_SQLALCHEMY_POOL_SIZE",
        "PREFECT_SERVER_DATABASE_SQLALCHEMY_MAX_OVERFLOW",
    ):
        assert str(env[key]) == local[key], key
    assert env["PREFECT_API_DATABASE_CONNECTION_URL"].startswith("postgresql+asyncpg://prefect:")
    assert compose["services"]["prefect-services"]["environment"] == env  # one anchor for both


def test_missing_binaries_say_what_to_install(monkeypatch):
    monkeypatch.setattr(postgres.shutil, "which", lambda name: None)
    monkeypatch.setattr(postgres.glob, "glob", lambda pattern: [])
    with pytest.raises(ValidationError) as e:
        postgres.find_bin_dir()
    assert "\n" not in str(e.value) and "apt-get install postgresql" in str(e.value)


@pytest.fixture(scope="module")
def pg_server():
    try:
        postgres.find_bin_dir()
    except ValidationError as e:
        pytest.skip(f"no PostgreSQL server binaries on this host: {e}")
    # not under pytest's tmp (mode 0700 for root): as root PostgreSQL runs as `postgres`
    root = Path(tempfile.mkdtemp(prefix="plantcad-pg-"))
    root.chmod(0o711)
    pg = postgres.local_postgres(root / "pg")
    server = None
    try:
        pg.start()
        server = start_server(
            home=root / "prefect-home",
            log_path=root / "prefect-server.log",
            timeout=240,
            settings=postgres.server_settings(pg.url),
        )
        yield server.api_url, pg, root
    finally:
        if server is not None:
            stop(server.process)
        pg.stop()
        shutil.rmtree(root, ignore_errors=True)


def _cli(*args, cwd, env, timeout=600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(CLI), *map(str, args)], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


def _server_log_clean(root: Path) -> None:
    log = (root / "prefect-server.log").read_text()
    assert "database is locked" not in log and "Traceback" not in log, log[-3000:]


@pytest.mark.slow
def test_eval_end_to_end_on_postgres(pg_server, small_models, synthetic_dir, tmp_path):
    api_url, pg, root = pg_server
    cfg = eval_config(
        small_models, synthetic_dir, tmp_path / "evals", tasks=(("tis_recovery", "test_maize"),)
    )
    cfg["models"] = cfg["models"][:1]
    (tmp_path / "eval.yaml").write_text(yaml.safe_dump(cfg))
    env = client_env(api_url, tmp_path / "client-home")
    proc = _cli("eval", "eval.yaml", "--results-json", "out.json", cwd=tmp_path, env=env)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    assert f"using the Prefect server at {api_url}" in proc.stdout
    rows = json.loads((tmp_path / "out.json").read_text())
    assert [(r["model"], r["task"], r["num_examples"]) for r in rows] == [("mlm", "tis_recovery", 16)]
    assert "1 cells: 1 scored, 0 from cache, 0 skipped, 0 failed" in proc.stdout
    run_id = re.search(r"/runs/flow-run/([0-9a-f-]{36})", proc.stdout).group(1)
    assert api(api_url, "GET", f"/flow_runs/{run_id}")["state_type"] == "COMPLETED"
    # the runs really live in PostgreSQL, with the extension Prefect needs
    assert int(pg._psql("prefect", "SELECT count(*) FROM task_run")) >= 3  # prepare, shards, metrics
    assert "pg_trgm" in pg._psql("prefect", "SELECT extname FROM pg_extension")
    _server_log_clean(root)


@pytest.mark.slow
def test_grid_on_postgres(pg_server, synthetic_dir, tmp_path):
    api_url, pg, root = pg_server
    eval_template = {
        "models": [{"name": "<model>", "path": "<path>", "type": "mlm", "context_length": 512}],
        "splits": [
            {"task": "tis_recovery", "split": "test_maize", "path": "<data>/tis_recovery/test_maize.parquet"}
        ],
        "compute": {"device": "cpu", "batch_size": 8},
        "ray": {"enabled": False},
    }
    (tmp_path / "eval.yaml").write_text(yaml.safe_dump(eval_template))
    spec = {
        "project": "pg-grid",
        "prefix": "outputs",
        "target": "kubernetes",  # --local wins: cells run in the CLI's process
        "models": {
            "tiny-mlm": {"hparam": {"_path": str(REPO / "plantcad_flows/assets/models/tiny-mlm")}},
            "echo": {
                "command": "[python -c \"import json; json.dump({'ok': 1}, open('outputs/r.json', 'w'))\"](false)"
            },
        },
        "datasets": {"synthetic": {"eval": "eval.yaml", "hparam": {"_data": str(synthetic_dir)}}},
    }
    (tmp_path / "grid.yaml").write_text(yaml.safe_dump(spec))
    env = client_env(api_url, tmp_path / "client-home")
    proc = _cli("grid", "submit", "grid.yaml", "--local", cwd=tmp_path, env=env)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    runs = api(api_url, "POST", "/flow_runs/filter", {"flow_runs": {"tags": {"all_": ["grid:pg-grid"]}}})
    cells = [r for r in runs if any(t.startswith("cell:") for t in r["tags"])]
    assert len(cells) == 2 and {r["state_type"] for r in cells} == {"COMPLETED"}
    status = _cli("grid", "status", "grid.yaml", cwd=tmp_path, env=env)
    assert status.stdout.splitlines()[-1] == "2 cells: 2 Completed", status.stdout
    assert (
        int(
            pg._psql(
                "prefect",
                "SELECT count(*) FROM flow_run WHERE 'grid:pg-grid' = ANY(SELECT jsonb_array_elements_text(tags))",
            )
        )
        >= 3
    )
    _server_log_clean(root)
    assert os.path.isdir(tmp_path / "outputs" / "grids" / "pg-grid")
