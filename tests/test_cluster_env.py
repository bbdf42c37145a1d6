"""`plantcad-flows env`: classification of hand-written scheduler environments."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from plantcad_flows.cluster.env import (
    GpuInfo,
    expand_hostlist,
    report_from_env,
    suggest_workers,
)


@pytest.mark.parametrize(
    "spec, hosts",
    [
        ("node7", ["node7"]),
        ("gpu[01-03,07]", ["gpu01", "gpu02", "gpu03", "gpu07"]),
        ("a[8-10]", ["a8", "a9", "a10"]),
        ("gpu[1-2],cpu-x[09-10]b", ["gpu1", "gpu2", "cpu-x09b", "cpu-x10b"]),
        ("r[1-2]n[1-2]", ["r1n1", "r1n2", "r2n1", "r2n2"]),
        ("h1,h2", ["h1", "h2"]),
    ],
)
def test_expand_hostlist(spec, hosts):
    assert expand_hostlist(spec) == hosts


def test_plain_host_uses_probe_and_cpus():
    r = report_from_env({}, gpus=GpuInfo(2, "NVIDIA A10"), cpus=16, hostname="box")
    assert (r.kind, r.hosts, r.gpus_per_host, r.gpu_model) == ("host", ("box",), 2, "NVIDIA A10")
    assert r.ray_address is None and r.num_workers == 2


def test_plain_host_cpu_only_suggests_half_the_cores():
    r = report_from_env({}, gpus=GpuInfo(), cpus=8, hostname="laptop")
    assert r.gpus_per_host == 0 and r.gpu_model is None and r.num_workers == 4


def test_cuda_visible_devices_limits_host_gpus():
    r = report_from_env({"CUDA_VISIBLE_DEVICES": "1"}, gpus=GpuInfo(8, "H100"), cpus=4, hostname="b")
    assert r.gpus_per_host == 1 and r.num_workers == 1


def test_kubernetes_pod():
    env = {
        "KUBERNETES_SERVICE_HOST": "10.0.0.1",
        "HOSTNAME": "zero-shot-eval-abcde",
        "NVIDIA_VISIBLE_DEVICES": "GPU-aaa,GPU-bbb",
        "POD_NAMESPACE": "lab-alice",
    }
    r = report_from_env(env, gpus=GpuInfo(2, "NVIDIA A100-SXM4-80GB"), cpus=8)
    assert r.kind == "kubernetes"
    assert r.hosts == ("zero-shot-eval-abcde",)
    assert r.gpus_per_host == 2 and r.gpu_model == "NVIDIA A100-SXM4-80GB"
    assert r.details == {"pod": "zero-shot-eval-abcde", "namespace": "lab-alice"}
    assert r.ray_address is None and r.num_workers == 2


def test_skypilot_head_comes_from_setup_list():
    env = {
        # The run step's list can omit the head; the setup list has every node, head first.
        "SKYPILOT_SETUP_NODE_IPS": "10.1.0.5\n10.1.0.6\n10.1.0.7\n",
        "SKYPILOT_NODE_IPS": "10.1.0.6\n10.1.0.7\n",
        "SKYPILOT_NODE_RANK": "1",
        "SKYPILOT_NUM_GPUS_PER_NODE": "4",
        "KUBERNETES_SERVICE_HOST": "x",  # SkyPilot on Kubernetes: SkyPilot wins
    }
    r = report_from_env(env, gpus=GpuInfo(4, "NVIDIA A10"), cpus=30)
    assert r.kind == "skypilot"
    assert r.hosts == ("10.1.0.5", "10.1.0.6", "10.1.0.7")
    assert r.ray_address == "10.1.0.5:6379"
    assert r.node_rank == 1 and r.gpus_per_host == 4 and r.num_workers == 12


def test_slurm_job():
    env = {
        "SLURM_JOB_ID": "4242",
        "SLURM_JOB_NODELIST": "gpu[003-004]",
        "SLURM_NODEID": "0",
        "SLURM_GPUS_ON_NODE": "4",
        "SLURM_JOB_PARTITION": "gpu",
    }
    r = report_from_env(env, gpus=GpuInfo(8, "NVIDIA H100 80GB HBM3"), cpus=32)
    assert r.kind == "slurm" and r.hosts == ("gpu003", "gpu004")
    # The scheduler's allocation wins over the 8 GPUs the probe sees on the shared node.
    assert r.gpus_per_host == 4 and r.num_workers == 8
    assert r.ray_address == "gpu003:6379"
    assert r.details == {"SLURM_JOB_ID": "4242", "SLURM_JOB_PARTITION": "gpu"}


def test_slurm_typed_gpu_spec():
    env = {"SLURM_JOB_ID": "1", "SLURM_JOB_NODELIST": "n1", "SLURM_GPUS_PER_NODE": "gpu:a100:2"}
    r = report_from_env(env, gpus=None, cpus=4)
    assert r.gpus_per_host == 2 and r.ray_address is None


def test_pbs_nodefile_dedupes_in_order(tmp_path):
    nodefile = tmp_path / "nodes"
    nodefile.write_text("x3001\nx3001\nx3002\nx3002\n")
    env = {"PBS_NODEFILE": str(nodefile), "PBS_JOBID": "77.polaris", "RAY_ADDRESS": "x3001:6380"}
    r = report_from_env(env, gpus=GpuInfo(4, "NVIDIA A100-SXM4-40GB"), cpus=64)
    assert r.kind == "pbs" and r.hosts == ("x3001", "x3002")
    assert r.ray_address == "x3001:6380"  # an explicit RAY_ADDRESS wins
    assert r.num_workers == 8


def test_suggest_workers():
    assert suggest_workers(3, 8, 64) == 24
    assert suggest_workers(1, 0, 1) == 1


def test_cli_json_on_this_machine():
    out = subprocess.run(
        [sys.executable, "-m", "plantcad_flows.cluster.env", "--json", "--no-probe"],
        capture_output=True,
        text=True,
        check=True,
        env={"PATH": "/usr/bin:/bin", "SLURM_JOB_ID": "9", "SLURM_JOB_NODELIST": "c[1-2]"},
    ).stdout
    data = json.loads(out)
    assert data["kind"] == "slurm" and data["hosts"] == ["c1", "c2"]
    assert data["ray_address"] == "c1:6379"
