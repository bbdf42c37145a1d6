"""Where is this process running, and how many scoring threads should this host use?

A run uses two things from here (`run_environment`): one line for its summary (the scheduler,
how many hosts the job has, the GPUs of this host) and the number of scoring workers for the
thread pool on this host: one per GPU of this host, else half of its CPUs (scoring is BLAS-bound).
Work on other hosts goes through Ray, which counts their resources itself (`ray_client`).
`plantcad-flows env` prints the same report.

Detection reads environment variables (and, for PBS, the node file they point to), so every rule
is a pure function of a mapping, tested with hand-written environments. Counting GPUs is the one
impure step (`probe_gpus`); a count the scheduler declares wins over it, since the probe sees every
GPU of a shared node. A SkyPilot task or a Slurm job can run inside a Kubernetes pod: the more
specific scheduler is checked first.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import shutil
import subprocess
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

from plantcad_flows.scoring.devices import cuda_devices

Kind = Literal["kubernetes", "skypilot", "slurm", "pbs", "host"]


@dataclass(frozen=True)
class GpuInfo:
    count: int = 0
    model: str | None = None


@dataclass(frozen=True)
class EnvReport:
    """Where the run is and what this host can use.

    Attributes:
        kind: kubernetes, skypilot, slurm, pbs or host.
        hosts: how many hosts the job spans.
        gpus: GPUs given to this host's processes.
        gpu_model: the first visible GPU's name, if known.
        cpus: CPUs usable on this host.
        workers: scoring workers for this host: one per GPU, else half the CPUs.
    """

    kind: Kind
    hosts: int
    gpus: int
    gpu_model: str | None
    cpus: int
    workers: int

    def line(self) -> str:
        gpus = f"{self.gpus} x {self.gpu_model or 'GPU'}" if self.gpus else "no GPU"
        return f"{self.kind}, {self.hosts} host(s), {gpus} on this host, {self.workers} worker(s) here"


def _count_gpu_spec(spec: str | None) -> int | None:
    """Slurm / PBS GPU counts come as "4", "a100:4", "gpu:a100:4" or "gpu:4(IDX:0-3)"."""
    total = 0
    for part in (spec or "").split(","):
        m = re.search(r"(\d+)(\(.*\))?$", part.strip())
        if m:
            total += int(m.group(1))
    return total or None


def _count_visible(devices: str | None) -> int | None:
    """CUDA_VISIBLE_DEVICES / NVIDIA_VISIBLE_DEVICES: "0,1", "GPU-uuid,...", "all", "none"."""
    if devices is None or devices.strip() in ("", "all", "void"):
        return None
    if devices.strip() in ("none", "-1"):
        return 0
    return len([d for d in devices.split(",") if d.strip()])


def _int(value: str | None) -> int | None:
    return int(value) if value and value.strip().isdigit() else None


# Per-scheduler rules: each returns (kind, hosts, GPUs declared for this host) or None
_Rule = tuple[Kind, int, int | None]


def _skypilot(env: Mapping[str, str]) -> _Rule | None:
    if not any(k in env for k in ("SKYPILOT_SETUP_NODE_IPS", "SKYPILOT_NODE_IPS", "SKYPILOT_TASK_ID")):
        return None
    # the setup step's list holds every node; the run step's can leave the head out
    ips = env.get("SKYPILOT_SETUP_NODE_IPS") or env.get("SKYPILOT_NODE_IPS") or ""
    return "skypilot", len(ips.split()) or 1, _int(env.get("SKYPILOT_NUM_GPUS_PER_NODE"))


def _slurm(env: Mapping[str, str]) -> _Rule | None:
    if "SLURM_JOB_ID" not in env:
        return None
    gpus = (
        _count_gpu_spec(env.get("SLURM_GPUS_ON_NODE"))
        or _count_gpu_spec(env.get("SLURM_GPUS_PER_NODE"))
        or _count_visible(env.get("CUDA_VISIBLE_DEVICES"))
    )
    return "slurm", _int(env.get("SLURM_JOB_NUM_NODES")) or _int(env.get("SLURM_NNODES")) or 1, gpus


def _pbs(env: Mapping[str, str]) -> _Rule | None:
    nodefile = env.get("PBS_NODEFILE")
    if not nodefile:
        return None
    path = Path(nodefile)
    # the node file repeats a host once per requested slot
    hosts = len({ln.strip() for ln in path.read_text().splitlines() if ln.strip()}) if path.is_file() else 1
    gpus = _count_gpu_spec(env.get("NGPUS")) or _count_visible(env.get("CUDA_VISIBLE_DEVICES"))
    return "pbs", hosts or 1, gpus


def _kubernetes(env: Mapping[str, str]) -> _Rule | None:
    if "KUBERNETES_SERVICE_HOST" not in env:
        return None
    gpus = _count_visible(env.get("NVIDIA_VISIBLE_DEVICES"))
    return "kubernetes", 1, gpus if gpus is not None else _count_visible(env.get("CUDA_VISIBLE_DEVICES"))


RULES: tuple[Callable[[Mapping[str, str]], _Rule | None], ...] = (_skypilot, _slurm, _pbs, _kubernetes)


def suggest_workers(gpus: int, cpus: int) -> int:
    """Scoring workers on one host: one per GPU; on a CPU-only host, half its cores each."""
    return gpus if gpus > 0 else max(1, cpus // 2)


def report_from_env(
    env: Mapping[str, str], gpus: GpuInfo | None = None, cpus: int | None = None
) -> EnvReport:
    """The pure core of `detect`: classify `env`; `gpus` is what a local probe found, if any."""
    kind: Kind = "host"
    hosts, declared = 1, _count_visible(env.get("CUDA_VISIBLE_DEVICES"))
    for rule in RULES:
        found = rule(env)
        if found is not None:
            kind, hosts, declared = found
            break
    probe = gpus or GpuInfo()
    if kind == "host" and declared is not None and gpus is not None:
        declared = min(declared, gpus.count)  # CUDA_VISIBLE_DEVICES can name absent devices
    n_gpus = declared if declared is not None else probe.count
    n_cpus = cpus or 1
    return EnvReport(
        kind=kind,
        hosts=hosts,
        gpus=n_gpus,
        gpu_model=probe.model if n_gpus else None,
        cpus=n_cpus,
        workers=suggest_workers(n_gpus, n_cpus),
    )


def probe_gpus() -> GpuInfo:
    """GPUs on this machine: nvidia-smi if installed (cheap), else torch.cuda, else none."""
    smi = shutil.which("nvidia-smi")
    if smi:
        try:
            out = subprocess.run(
                [smi, "--query-gpu=name", "--format=csv,noheader"],
                capture_output=True,
                text=True,
                timeout=20,
                check=True,
            ).stdout
            names = [ln.strip() for ln in out.splitlines() if ln.strip()]
            if names:
                return GpuInfo(len(names), names[0])
        except (OSError, subprocess.SubprocessError):
            pass

    n, name = cuda_devices()
    return GpuInfo(n, name) if n else GpuInfo()


def usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def detect(env: Mapping[str, str] | None = None, probe: bool = True) -> EnvReport:
    """Report on the current process (or on `env`); `probe=False` never touches the GPU."""
    return report_from_env(
        os.environ if env is None else env, gpus=probe_gpus() if probe else None, cpus=usable_cpus()
    )


def run_environment() -> tuple[str, int]:
    """One line on where a run is (for its summary), and the workers this host should use.

    Detection is informative only: a failure is logged and never fails a run."""
    try:
        r = detect()
    except Exception as e:
        logging.getLogger(__name__).warning("environment detection failed: %s", e)
        return "unknown", 1
    return r.line(), r.workers


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="plantcad-flows env", description="Report where this run is and what this host can use."
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of a line")
    parser.add_argument("--no-probe", action="store_true", help="do not look for GPUs")
    args = parser.parse_args(argv)
    report = detect(probe=not args.no_probe)
    print(json.dumps(asdict(report), indent=2) if args.json else report.line())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
