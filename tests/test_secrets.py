"""Secrets never reach what the project stores, prints or shows.

End to end (real Prefect server, moto S3 server, a process worker): distinct secret values are
planted in HF_TOKEN, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, the git remote URL of a throwaway
clone of this tree (`https://x-access-token:TOKEN@...`) and the S3 endpoint URL given to setup
(`http://user:PASSWORD@127.0.0.1:port`). Then `setup` (from the clone, so its origin is the one
carrying the token), a deployment run that writes to S3 with the keys from the blocks, `preview-job`
asked to put the secrets in the Job's env, and `plantcad-flows eval` with an `s3://` prefix. Then
every place is read back and searched: each object under the S3 prefixes, every artifact,
variable, block document (public fields, as the API returns them), deployment, work pool, flow
run (parameters, job variables, state messages), every flow-run and task-run log, the rendered
manifest, and everything the commands printed.

Also here, without services: what Ray uploads as the job's working_dir, and `trust_remote_code`.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import zipfile
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from conftest import eval_config
from servers import (
    VENV_BIN,
    client_env,
    deployment_run,
    snapshot_repo,
    start_moto,
    start_prefect_server,
    start_worker,
    stop,
    wait_for_flow_run,
)

from plantcad_flows.cluster.ray_client import WORKING_DIR_EXCLUDES
from plantcad_flows.config import ModelConfig
from plantcad_flows.errors import ValidationError

# ------------------------------------------------------------------ Ray's working_dir upload


def test_ray_upload_excludes_secrets_homes_and_data(tmp_path):
    """Ray's own packaging code zips a tree as it would upload it, with .gitignore handling off:
    the excludes alone keep secrets, Prefect homes, outputs and data out; the code goes."""
    from ray._private.runtime_env.packaging import _zip_files

    tree = {
        ".env": "HF_TOKEN=x",
        ".env.local": "x",
        "infra/server/.env": "POSTGRES_PASSWORD=x",
        "deployments/.env.prod": "x",
        ".prefect/profiles.toml": "x",
        ".prefect-home/prefect.db": "x",
        "tests/.prefect-home/prefect.db": "x",
        "outputs/demo/results.json": "x",
        "data/synthetic/tis_recovery/test_maize.parquet": "x",
        "plantcad_flows/__init__.py": "",
        "plantcad_flows/data/splits.py": "",  # a package named data must still ship
        "flows/zero_shot_eval.py": "",
        "infra/server/compose.yaml": "",
        "prefect.yaml": "",
    }
    for rel, text in tree.items():
        (tmp_path / "repo" / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "repo" / rel).write_text(text)
    out = tmp_path / "pkg.zip"
    _zip_files(str(tmp_path / "repo"), list(WORKING_DIR_EXCLUDES), str(out), include_gitignore=False)
    shipped = {n for n in zipfile.ZipFile(out).namelist() if not n.endswith("/")}
    assert shipped == {
        "plantcad_flows/__init__.py",
        "plantcad_flows/data/splits.py",
        "flows/zero_shot_eval.py",
        "infra/server/compose.yaml",
        "prefect.yaml",
    }


# ------------------------------------------------------------------ trust_remote_code


def _custom_code_model(tmp_path: Path, small_models) -> Path:
    import shutil

    d = tmp_path / "custom"
    shutil.copytree(small_models["mlm"], d)
    conf = json.loads((d / "config.json").read_text())
    conf["auto_map"] = {
        "AutoConfig": "configuration_x.XConfig",
        "AutoModelForMaskedLM": "modeling_x.XForMaskedLM",
    }
    (d / "config.json").write_text(json.dumps(conf))
    return d


def test_trust_remote_code_defaults_to_false_and_is_checked_before_the_device(tmp_path, small_models):
    import torch

    from plantcad_flows.config import ComputeConfig
    from plantcad_flows.scoring.loading import load_model

    assert ModelConfig(path="kuleshov-group/PlantCAD2-Small-l24-d0768").trust_remote_code is False
    d = _custom_code_model(tmp_path, small_models)
    with pytest.raises(ValueError) as e:  # a local directory: with the config itself (pydantic wraps it)
        ModelConfig(path=str(d), name="custom")
    assert "models[custom].trust_remote_code=False: " in str(e.value) and "auto_map" in str(e.value)
    assert ModelConfig(path=str(d), name="custom", trust_remote_code=True).trust_remote_code

    # at load time (what a hub id meets): refused before the device is even looked at
    unchecked = ModelConfig.model_construct(**ModelConfig(path=str(small_models["mlm"])).model_dump())
    unchecked = unchecked.model_copy(update={"path": str(d), "name": "custom"})
    device = "cuda" if not torch.cuda.is_available() else "cpu"
    with pytest.raises(ValidationError) as e:
        load_model(unchecked, ComputeConfig(device=device))
    assert type(e.value) is ValidationError  # not DeviceError: nothing touched the device
    assert "models[custom].trust_remote_code=False" in str(e.value) and "auto_map" in str(e.value)


def test_shipped_plantcad_configs_run_natively_without_remote_code():
    """PlantCaduceus and PlantCAD2 run on the project's own implementation: no shipped config or
    deployment asks to run a repository's code."""
    repo = Path(__file__).resolve().parents[1]
    from plantcad_flows.config import load_config

    cfg = load_config(repo / "configs" / "plantcad2.yaml")
    assert any("PlantCaduceus" in m.path for m in cfg.models)
    assert cfg.models and not any(m.trust_remote_code for m in cfg.models)
    assert all(m.implementation in ("auto", "native") for m in cfg.models)
    spec = yaml.safe_load((repo / "prefect.yaml").read_text())
    bench = spec["definitions"]["configs"]["benchmark"]["models"]
    assert bench and not any(m.get("trust_remote_code") for m in bench)


# ------------------------------------------------------------------ end to end


MOTO = VENV_BIN / "moto_server"
BUCKET = "plantcad-secrets"


@pytest.fixture
def moto(tmp_path):
    url, proc = start_moto(tmp_path)
    try:
        yield url
    finally:
        stop(proc)


def _s3(endpoint: str, key_id: str, secret: str):
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=key_id,
        aws_secret_access_key=secret,
        region_name="us-east-1",
    )


def _everything_on_the_server(api_url: str) -> dict[str, str]:
    """Every object the server holds that a user could see, as text, read through the client."""
    from prefect import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    def dump(items) -> str:
        return "\n".join(json.dumps(i.model_dump(mode="json"), default=str) for i in items)

    with temporary_settings(updates={PREFECT_API_URL: api_url}), get_client(sync_client=True) as c:
        flow_runs = c.read_flow_runs()
        out = {
            "artifacts": dump(c.read_artifacts()),
            "variables": dump(c.read_variables()),
            "block documents": dump(c.read_block_documents(include_secrets=False)),
            "deployments": dump(c.read_deployments()),
            "work pools": dump(c.read_work_pools()),
            "flow runs": dump(flow_runs),
            "task runs": dump(c.read_task_runs()),
            "logs": "\n".join(log.message for log in c.read_logs(limit=200)),
        }
        offset, messages = 200, []
        while batch := c.read_logs(limit=200, offset=offset):
            messages += [log.message for log in batch]
            offset += 200
        out["logs"] += "\n" + "\n".join(messages)
        out["log count"] = str(offset)
    return out


@pytest.mark.slow
def test_planted_secrets_appear_nowhere(tmp_path, moto, synthetic_dir, small_models):
    planted = {
        "HF_TOKEN": "hf_" + secrets.token_hex(16),
        "AWS_ACCESS_KEY_ID": "AKIA" + secrets.token_hex(8).upper(),
        "AWS_SECRET_ACCESS_KEY": secrets.token_hex(20),
        "git remote token": "ghp_" + secrets.token_hex(18),
        "S3 endpoint password": "pw" + secrets.token_hex(12),
    }
    aws = {
        "AWS_ACCESS_KEY_ID": planted["AWS_ACCESS_KEY_ID"],
        "AWS_SECRET_ACCESS_KEY": planted["AWS_SECRET_ACCESS_KEY"],
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    s3 = _s3(moto, aws["AWS_ACCESS_KEY_ID"], aws["AWS_SECRET_ACCESS_KEY"])
    s3.create_bucket(Bucket=BUCKET)
    printed: dict[str, str] = {}

    api_url, server = start_prefect_server(tmp_path / "server")
    procs = [server]
    try:
        # a clone of this tree whose origin URL carries a token
        clone = snapshot_repo(tmp_path / "clone")
        remote = (
            f"https://x-access-token:{planted['git remote token']}@git.example.invalid/lab/plantcad-flows.git"
        )
        subprocess.run(["git", "-C", str(clone), "remote", "add", "origin", remote], check=True)
        host, port = moto.removeprefix("http://").split(":")
        endpoint_with_password = f"http://s3user:{planted['S3 endpoint password']}@{host}:{port}"
        home = tmp_path / "client-home"
        env = client_env(api_url, home, PYTHONPATH=str(clone))
        setup = subprocess.run(
            [sys.executable, "-m", "deployments.setup", "--env-file", str(tmp_path / "no.env")],
            cwd=clone,
            env={**env, **aws, "HF_TOKEN": planted["HF_TOKEN"], "AWS_ENDPOINT_URL": endpoint_with_password},
            capture_output=True,
            text=True,
            timeout=600,
        )
        printed["setup"] = setup.stdout + setup.stderr
        assert setup.returncode == 0, printed["setup"][-4000:]
        assert (
            "variable plantcad_flows_repo = https://git.example.invalid/lab/plantcad-flows.git"
            in setup.stdout
        )

        # a deployment run: the worker resolves the keys from the blocks and writes to S3
        worker = start_worker("local", env, tmp_path / "worker.log", cwd=tmp_path)
        procs.append(worker)
        cfg = eval_config(
            small_models,
            synthetic_dir,
            f"s3://{BUCKET}/deployment",
            tasks=(("tis_recovery", "test_maize"),),
        )
        cfg["models"] = cfg["models"][:1]

        stack = SimpleNamespace(tmp=tmp_path, env=env)  # what servers.deployment_run needs
        run_id = deployment_run(stack, "zero-shot-eval/local", "--params", json.dumps({"config": cfg}))
        run = wait_for_flow_run(api_url, run_id, 600, alive=[worker])
        printed["worker"] = (tmp_path / "worker.log").read_text(errors="replace")
        assert run["state_type"] == "COMPLETED", printed["worker"][-4000:]

        # preview-job, asked to put the secrets in the Job's env
        job_vars = {
            "env": {"HF_TOKEN": planted["HF_TOKEN"], "AWS_SECRET_ACCESS_KEY": aws["AWS_SECRET_ACCESS_KEY"]}
        }
        preview = subprocess.run(
            [str(VENV_BIN / "plantcad-flows"), "preview-job", "--job-variables", json.dumps(job_vars)],
            cwd=tmp_path,
            env={**env, **aws, "HF_TOKEN": planted["HF_TOKEN"]},
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert preview.returncode == 0, preview.stderr[-3000:]
        manifest = yaml.safe_load(preview.stdout)
        assert manifest["kind"] == "Job"
        printed["preview-job"] = preview.stdout + preview.stderr

        # an eval with an s3:// prefix, the keys in its environment
        eval_cfg = dict(cfg, executor={"prefix": f"s3://{BUCKET}/cli"})
        (tmp_path / "eval.yaml").write_text(yaml.safe_dump(eval_cfg))
        ev = subprocess.run(
            [str(VENV_BIN / "plantcad-flows"), "eval", str(tmp_path / "eval.yaml")],
            cwd=tmp_path,
            env={**env, **aws, "HF_TOKEN": planted["HF_TOKEN"], "AWS_ENDPOINT_URL": moto},
            capture_output=True,
            text=True,
            timeout=600,
        )
        printed["eval"] = ev.stdout + ev.stderr
        assert ev.returncode == 0, printed["eval"][-4000:]

        # ---- read everything back
        places = dict(printed)
        keys = [
            o["Key"]
            for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET)
            for o in page.get("Contents", [])
        ]
        assert any(k.startswith("deployment/score_cell-") for k in keys) and any(
            k.startswith("cli/runs/") for k in keys
        )
        for k in keys:
            places[f"s3://{BUCKET}/{k}"] = (
                s3.get_object(Bucket=BUCKET, Key=k)["Body"].read().decode("latin-1")
            )
        server_side = _everything_on_the_server(api_url)
        places.update({f"server {k}": v for k, v in server_side.items()})
        assert (
            "plantcad_flows_repo" in server_side["variables"] and "hf-token" in server_side["block documents"]
        )
        assert "zero-shot-summary" in server_side["artifacts"] and int(server_side["log count"]) > 0
        for dirpath, _, files in os.walk(tmp_path / "client-home"):
            for f in files:
                p = Path(dirpath) / f
                places[str(p)] = p.read_bytes().decode("latin-1")

        leaks = [
            (what, where)
            for what, value in planted.items()
            for where, text in places.items()
            if value in text
        ]
        assert leaks == [], leaks
        # and the secrets did work: the deployment run's flow process had the keys (it wrote to S3)
        print(f"searched {len(places)} places ({len(keys)} S3 objects); no planted value found")
    finally:
        for p in reversed(procs):
            stop(p)
