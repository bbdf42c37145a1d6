"""The kubernetes pool's Job, rendered by prefect-kubernetes' own code and checked against the
Kubernetes OpenAPI schema (no cluster, no Prefect server)."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
K8S_VERSION = "1.33"  # a recent release bundled with kubernetes-validate

JOB_VARIABLES = {
    "gpu_count": 2,
    "gpu_products": ["NVIDIA-A100-SXM4-80GB", "NVIDIA-H100-80GB-HBM3"],
    "gpu_product_operator": "In",
    "hostname_deny": ["gpu-node-07"],
    "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "gpu-lab", "effect": "NoSchedule"}],
    "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "plantcad-data"}}],
    "volume_mounts": [{"name": "data", "mountPath": "/data"}],
    "secret_env": [{"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "hf", "key": "token"}}}],
    "namespace": "lab-alice",
    "service_account": "plantcad-runner",
    "cpu": "8",
    "memory": "64Gi",
}


def _preview(job_variables: dict, *extra: str, env_extra: dict | None = None):
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(env_extra or {})
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "deployments.preview_job",
            "--job-variables",
            json.dumps(job_variables),
            *extra,
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture(scope="module")
def rendered():
    token = "hf_" + secrets.token_hex(16)
    proc = _preview(JOB_VARIABLES, "--validate", K8S_VERSION, env_extra={"HF_TOKEN": token})
    assert proc.returncode == 0, proc.stderr[-3000:]
    return token, proc.stdout, proc.stderr, yaml.safe_load(proc.stdout)


def test_manifest_is_valid_kubernetes(rendered):
    from deployments.preview_job import validate_manifest

    _, _, _, job = rendered
    assert validate_manifest(job, K8S_VERSION) == []
    # ... and the validator does reject a broken one, so the check above means something.
    broken = json.loads(json.dumps(job))
    broken["spec"]["template"]["spec"]["containers"][0]["resourcez"] = {}
    assert validate_manifest(broken, K8S_VERSION)


def test_gpu_cpu_memory(rendered):
    job = rendered[3]
    res = job["spec"]["template"]["spec"]["containers"][0]["resources"]
    assert res["limits"]["nvidia.com/gpu"] == 2
    assert res["limits"]["cpu"] == res["requests"]["cpu"] == "8"
    assert res["limits"]["memory"] == res["requests"]["memory"] == "64Gi"
    assert res["limits"]["ephemeral-storage"] == "50Gi"  # pool default


def test_affinity_tolerations_mounts(rendered):
    job = rendered[3]
    pod = job["spec"]["template"]["spec"]
    terms = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
        "nodeSelectorTerms"
    ]
    assert terms == [
        {
            "matchExpressions": [
                {
                    "key": "nvidia.com/gpu.product",
                    "operator": "In",
                    "values": ["NVIDIA-A100-SXM4-80GB", "NVIDIA-H100-80GB-HBM3"],
                },
                {"key": "kubernetes.io/hostname", "operator": "NotIn", "values": ["gpu-node-07"]},
            ]
        }
    ]
    assert pod["tolerations"] == JOB_VARIABLES["tolerations"]
    assert pod["volumes"] == [{"name": "data", "persistentVolumeClaim": {"claimName": "plantcad-data"}}]
    assert pod["containers"][0]["volumeMounts"] == [{"name": "data", "mountPath": "/data"}]
    assert pod["serviceAccountName"] == "plantcad-runner"
    assert job["metadata"]["namespace"] == "lab-alice"
    assert pod["restartPolicy"] == "Never" and job["spec"]["backoffLimit"] == 0
    assert job["spec"]["ttlSecondsAfterFinished"] == 86400


def test_hf_token_is_a_secret_reference_and_never_its_value(rendered):
    token, stdout, stderr, job = rendered
    env = job["spec"]["template"]["spec"]["containers"][0]["env"]
    hf = [e for e in env if e["name"] == "HF_TOKEN"]
    assert hf == [{"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "hf", "key": "token"}}}]
    assert token not in stdout and token not in stderr
    # The worker adds the run's Prefect settings and its entry command.
    names = {e["name"] for e in env}
    assert {"PREFECT_API_URL", "PREFECT__FLOW_RUN_ID"} <= names
    assert job["spec"]["template"]["spec"]["containers"][0]["args"][:3] == ["prefect", "flow-run", "execute"]


def test_defaults_are_neutral_and_valid():
    """No variables: the affinity matches every node and the Secrets are optional."""
    proc = _preview({}, "--validate", K8S_VERSION)
    assert proc.returncode == 0, proc.stderr[-3000:]
    job = yaml.safe_load(proc.stdout)
    pod = job["spec"]["template"]["spec"]
    exprs = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
        "nodeSelectorTerms"
    ][0]["matchExpressions"]
    assert all(e["operator"] == "NotIn" for e in exprs)
    assert "serviceAccountName" not in pod  # unset -> namespace default
    assert all(
        e["valueFrom"]["secretKeyRef"]["optional"] for e in pod["containers"][0]["env"] if "valueFrom" in e
    )
    assert pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 1


def test_secret_looking_prefect_settings_are_masked():
    key = "pnu_" + secrets.token_hex(12)
    proc = _preview({"env": {"EXTRA_API_KEY": key}}, env_extra={"PREFECT_API_KEY": key})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert key not in proc.stdout
    env = yaml.safe_load(proc.stdout)["spec"]["template"]["spec"]["containers"][0]["env"]
    masked = {e["name"] for e in env if e.get("value") == "<redacted>"}
    assert {"PREFECT_API_KEY", "EXTRA_API_KEY"} <= masked


def test_deployment_job_variables_are_merged():
    proc = _preview({"gpu_count": 4}, "--deployment", "kubernetes")
    assert proc.returncode == 0, proc.stderr[-3000:]
    job = yaml.safe_load(proc.stdout)
    assert job["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 4


def test_bad_json_is_a_one_line_error():
    proc = subprocess.run(
        [sys.executable, "-m", "deployments.preview_job", "--job-variables", "{gpu_count: 2}"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode != 0
    assert "--job-variables=" in proc.stderr and "not JSON" in proc.stderr


def test_worker_manifests_are_valid_and_grant_jobs_and_pods():
    import kubernetes_validate

    docs = [
        d
        for f in sorted((REPO / "infra/kubernetes/worker").glob("*.yaml"))
        for d in yaml.safe_load_all(f.read_text())
        if d
    ]
    for doc in docs:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    kinds = {d["kind"] for d in docs}
    assert {"ServiceAccount", "Role", "RoleBinding", "Deployment"} <= kinds
    role = next(d for d in docs if d["kind"] == "Role")
    grants = {
        (g, r): set(rule["verbs"])
        for rule in role["rules"]
        for g in rule["apiGroups"]
        for r in rule["resources"]
    }
    assert "create" in grants[("batch", "jobs")]
    assert {"get", "list", "watch"} <= grants[("", "pods")] and "get" in grants[("", "pods/log")]
    worker = next(d for d in docs if d["kind"] == "Deployment")
    args = worker["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[:6] == ["prefect", "worker", "start", "--pool", "kubernetes", "--type"]
    assert worker["spec"]["template"]["spec"]["serviceAccountName"] == "prefect-worker"
