"""`plantcad-flows env`: classification of hand-written scheduler environments, and the worker
count of one host (from that host's GPUs and CPUs, never multiplied by the number of hosts)."""

from __future__ import annotations

import json
import subprocess
import sys

from plantcad_flows.cluster.env import GpuInfo, report_from_env, suggest_workers


def test_plain_host_uses_probe_and_cpus():
    r = report_from_env({}, gpus=GpuInfo(2, "NVIDIA A10"), cpus=16)
    assert (r.kind, r.hosts, r.gpus, r.gpu_model, r.workers) == ("host", 1, 2, "NVIDIA A10", 2)
    assert r.line() == "host, 1 host(s), 2 x NVIDIA A10 on this host, 2 worker(s) here"


def test_plain_host_cpu_only_suggests_half_the_cores():
    r = report_from_env({}, gpus=GpuInfo(), cpus=8)
    assert r.gpus == 0 and r.gpu_model is None and r.workers == 4


def test_cuda_visible_devices_limits_host_gpus():
    r = report_from_env({"CUDA_VISIBLE_DEVICES": "1"}, gpus=GpuInfo(8, "H100"), cpus=4)
    assert r.gpus == 1 and r.workers == 1


def test_kubernetes_pod():
    env = {
        "KUBERNETES_SERVICE_HOST": "10.0.0.1",
        "HOSTNAME": "zero-shot-eval-abcde",
        "NVIDIA_VISIBLE_DEVICES": "GPU-aaa,GPU-bbb",
    }
    r = report_from_env(env, gpus=GpuInfo(8, "NVIDIA A100-SXM4-80GB"), cpus=8)
    assert (r.kind, r.hosts, r.gpus, r.gpu_model, r.workers) == (
        "kubernetes",
        1,
        2,
        "NVIDIA A100-SXM4-80GB",
        2,
    )


def test_skypilot_counts_hosts_from_setup_list():
    env = {
        # The run step's list can omit the head; the setup list has every node.
        "SKYPILOT_SETUP_NODE_IPS": "10.1.0.5\n10.1.0.6\n10.1.0.7\n",
        "SKYPILOT_NODE_IPS": "10.1.0.6\n10.1.0.7\n",
        "SKYPILOT_NUM_GPUS_PER_NODE": "4",
        "KUBERNETES_SERVICE_HOST": "x",  # SkyPilot on Kubernetes: SkyPilot wins
    }
    r = report_from_env(env, gpus=GpuInfo(4, "NVIDIA A10"), cpus=30)
    assert r.kind == "skypilot" and r.hosts == 3
    assert r.gpus == 4 and r.workers == 4  # this host's GPUs, not 3 hosts x 4


def test_slurm_job():
    env = {"SLURM_JOB_ID": "4242", "SLURM_JOB_NUM_NODES": "2", "SLURM_GPUS_ON_NODE": "4"}
    r = report_from_env(env, gpus=GpuInfo(8, "NVIDIA H100 80GB HBM3"), cpus=32)
    # The scheduler's allocation wins over the 8 GPUs the probe sees on the shared node.
    assert (r.kind, r.hosts, r.gpus, r.workers) == ("slurm", 2, 4, 4)


def test_slurm_typed_gpu_spec():
    env = {"SLURM_JOB_ID": "1", "SLURM_GPUS_PER_NODE": "gpu:a100:2"}
    r = report_from_env(env, gpus=None, cpus=4)
    assert r.gpus == 2 and r.hosts == 1 and r.workers == 2


def test_pbs_nodefile_counts_distinct_hosts(tmp_path):
    nodefile = tmp_path / "nodes"
    nodefile.write_text("x3001\nx3001\nx3002\nx3002\n")
    r = report_from_env({"PBS_NODEFILE": str(nodefile)}, gpus=GpuInfo(4, "NVIDIA A100-SXM4-40GB"), cpus=64)
    assert r.kind == "pbs" and r.hosts == 2 and r.workers == 4


def test_suggest_workers_is_per_host():
    assert suggest_workers(8, 64) == 8
    assert suggest_workers(0, 16) == 8
    assert suggest_workers(0, 1) == 1


def test_cli_json_on_this_machine():
    out = subprocess.run(
        [sys.executable, "-m", "plantcad_flows.cluster.env", "--json", "--no-probe"],
        capture_output=True,
        text=True,
        check=True,
        env={"PATH": "/usr/bin:/bin", "SLURM_JOB_ID": "9", "SLURM_JOB_NUM_NODES": "2"},
    ).stdout
    data = json.loads(out)
    assert data["kind"] == "slurm" and data["hosts"] == 2 and data["workers"] >= 1
