"""Where is this process running? Kubernetes pod, SkyPilot/Lambda node, Slurm or PBS job, or a host.

`plantcad-flows env` prints the answer, and the flow uses it to pick its default number of scoring
workers (one per GPU across the hosts, or a share of the CPUs) and records it in the run summary.

Detection reads only environment variables (and, for PBS, the node file they point to), so every
rule here is a pure function of a mapping and is tested with hand-written environments. Counting
GPUs is the one impure step; it lives in `probe_gpus` and is skipped when a scheduler already says
how many GPUs this host has. The order of the checks matters: a SkyPilot task or a Slurm job can
run inside a Kubernetes pod, and the more specific scheduler is the one that knows the other hosts.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import subprocess
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

Kind = Literal["kubernetes", "skypilot", "slurm", "pbs", "host"]
RAY_PORT = 6379


@dataclass(frozen=True)
class GpuInfo:
    count: int = 0
    model: str | None = None


@dataclass(frozen=True)
class EnvReport:
    """Where the run is and what it can use.

    Attributes:
        kind: kubernetes, skypilot, slurm, pbs or host.
        hosts: every host of the job, head (rank 0) first.
        gpus_per_host: GPUs visible on this host (assumed the same on the others).
        gpu_model: the first visible GPU's name, if known.
        ray_address: the Ray cluster to join (RAY_ADDRESS, or the head at port 6379 when the job
            spans several hosts); None means start a local Ray.
        num_workers: suggested scoring workers: one per GPU, else half the CPUs of each host.
        node_rank: this host's rank in `hosts`, when the scheduler says.
        cpus_per_host: CPUs usable on this host.
        details: scheduler facts worth showing (job id, pod name, ...).
    """

    kind: Kind
    hosts: tuple[str, ...]
    gpus_per_host: int
    gpu_model: str | None
    ray_address: str | None
    num_workers: int
    node_rank: int | None = None
    cpus_per_host: int = 1
    details: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["hosts"] = list(self.hosts)
        return d


# ---------------------------------------------------------------------------------------------
# Pure parsing helpers


def expand_hostlist(spec: str) -> list[str]:
    """Expand a Slurm host list: "gpu[01-03,07],cpu-a[1-2]b" -> gpu01 gpu02 gpu03 gpu07 cpu-a1b ...

    Zero padding follows the lower bound of each range, as Slurm does. Several bracket groups in
    one name expand as a product ("r[1-2]n[1-2]" -> r1n1 r1n2 r2n1 r2n2).
    """
    hosts: list[str] = []
    for item in _split_top_level(spec.strip()):
        if item:
            hosts.extend(_expand_one(item))
    return hosts


def _split_top_level(spec: str) -> list[str]:
    parts, depth, cur = [], 0, []
    for ch in spec:
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    parts.append("".join(cur))
    return parts


def _expand_one(name: str) -> list[str]:
    m = re.search(r"\[([^\]]*)\]", name)
    if not m:
        return [name]
    head, tail = name[: m.start()], name[m.end() :]
    out: list[str] = []
    for rng in m.group(1).split(","):
        lo, _, hi = rng.partition("-")
        if hi:
            width = len(lo)
            values = [str(i).zfill(width) for i in range(int(lo), int(hi) + 1)]
        else:
            values = [lo]
        for v in values:
            out.extend(_expand_one(head + v + tail))
    return out


def _count_gpu_spec(spec: str | None) -> int | None:
    """Slurm GPU counts come as "4", "a100:4", "gpu:a100:4" or "gpu:4(IDX:0-3)"."""
    if not spec:
        return None
    total = 0
    for part in spec.split(","):
        m = re.search(r"(\d+)(\(.*\))?$", part.strip())
        if m:
            total += int(m.group(1))
    return total or None


def _count_visible(devices: str | None) -> int | None:
    """CUDA_VISIBLE_DEVICES / NVIDIA_VISIBLE_DEVICES: "0,1", "GPU-uuid,...", "all", "none"."""
    if devices is None or devices.strip() in ("", "all", "void"):
        return None
    if devices.strip() == "none" or devices.strip() == "-1":
        return 0
    return len([d for d in devices.split(",") if d.strip()])


def _lines(text: str | None) -> list[str]:
    return [ln.strip() for ln in (text or "").splitlines() if ln.strip()]


def _unique(items: list[str]) -> list[str]:
    return list(dict.fromkeys(items))


# ---------------------------------------------------------------------------------------------
# Per-scheduler rules: each returns (kind, hosts, rank, declared GPUs per host, details) or None


_Rule = tuple[Kind, list[str], int | None, int | None, dict[str, str]]


def _skypilot(env: Mapping[str, str]) -> _Rule | None:
    if not any(k in env for k in ("SKYPILOT_SETUP_NODE_IPS", "SKYPILOT_NODE_IPS", "SKYPILOT_TASK_ID")):
        return None
    # The run step's SKYPILOT_NODE_IPS lists only the nodes of this task and can leave the head
    # out; the setup step's list always holds every node, head first.
    hosts = _lines(env.get("SKYPILOT_SETUP_NODE_IPS")) or _lines(env.get("SKYPILOT_NODE_IPS"))
    rank = int(env["SKYPILOT_NODE_RANK"]) if env.get("SKYPILOT_NODE_RANK", "").isdigit() else None
    gpus = (
        int(env["SKYPILOT_NUM_GPUS_PER_NODE"])
        if env.get("SKYPILOT_NUM_GPUS_PER_NODE", "").isdigit()
        else None
    )
    details = {k: env[k] for k in ("SKYPILOT_TASK_ID", "SKYPILOT_CLUSTER_INFO") if k in env}
    return "skypilot", hosts, rank, gpus, details


def _slurm(env: Mapping[str, str]) -> _Rule | None:
    if "SLURM_JOB_ID" not in env and "SLURM_JOB_NODELIST" not in env:
        return None
    hosts = expand_hostlist(env.get("SLURM_JOB_NODELIST") or env.get("SLURM_NODELIST") or "")
    rank = int(env["SLURM_NODEID"]) if env.get("SLURM_NODEID", "").isdigit() else None
    gpus = (
        _count_gpu_spec(env.get("SLURM_GPUS_ON_NODE"))
        or _count_gpu_spec(env.get("SLURM_GPUS_PER_NODE"))
        or _count_visible(env.get("CUDA_VISIBLE_DEVICES"))
    )
    details = {k: env[k] for k in ("SLURM_JOB_ID", "SLURM_JOB_PARTITION") if k in env}
    return "slurm", hosts, rank, gpus, details


def _pbs(env: Mapping[str, str]) -> _Rule | None:
    nodefile = env.get("PBS_NODEFILE")
    if not nodefile:
        return None
    path = Path(nodefile)
    # The node file repeats a host once per requested slot; order is rank order.
    hosts = _unique(_lines(path.read_text())) if path.is_file() else []
    gpus = _count_gpu_spec(env.get("NGPUS")) or _count_visible(env.get("CUDA_VISIBLE_DEVICES"))
    details = {k: env[k] for k in ("PBS_JOBID", "PBS_QUEUE") if k in env}
    return "pbs", hosts, None, gpus, details


def _kubernetes(env: Mapping[str, str]) -> _Rule | None:
    if "KUBERNETES_SERVICE_HOST" not in env:
        return None
    pod = env.get("POD_NAME") or env.get("HOSTNAME") or ""
    gpus = _count_visible(env.get("NVIDIA_VISIBLE_DEVICES"))
    if gpus is None:
        gpus = _count_visible(env.get("CUDA_VISIBLE_DEVICES"))
    details = {"pod": pod} if pod else {}
    if env.get("POD_NAMESPACE"):
        details["namespace"] = env["POD_NAMESPACE"]
    return "kubernetes", [pod] if pod else [], 0, gpus, details


RULES: tuple[Callable[[Mapping[str, str]], _Rule | None], ...] = (_skypilot, _slurm, _pbs, _kubernetes)


def suggest_workers(hosts: int, gpus_per_host: int, cpus_per_host: int) -> int:
    """One worker per GPU; on CPU-only hosts, half the cores each (scoring is BLAS-bound)."""
    per_host = gpus_per_host if gpus_per_host > 0 else max(1, cpus_per_host // 2)
    return max(1, hosts) * per_host


def report_from_env(
    env: Mapping[str, str],
    gpus: GpuInfo | None = None,
    cpus: int | None = None,
    hostname: str = "localhost",
) -> EnvReport:
    """The pure core of `detect`: classify `env`; `gpus` is what a local probe found, if any.

    A count declared by the scheduler wins over the probe (the probe sees every GPU of a shared
    node, the scheduler only those given to this job).
    """
    kind: Kind = "host"
    hosts: list[str] = []
    rank: int | None = None
    declared: int | None = None
    details: dict[str, str] = {}
    for rule in RULES:
        found = rule(env)
        if found is not None:
            kind, hosts, rank, declared, details = found
            break
    if not hosts:
        hosts = [hostname]
    if kind == "host":
        rank = 0
        declared = _count_visible(env.get("CUDA_VISIBLE_DEVICES"))
        if declared is not None and gpus is not None:
            declared = min(declared, gpus.count)
    probe = gpus or GpuInfo()
    n_gpus = declared if declared is not None else probe.count
    if env.get("RAY_ADDRESS"):
        ray_address: str | None = env["RAY_ADDRESS"]
    elif len(hosts) > 1:
        ray_address = f"{hosts[0]}:{RAY_PORT}"
    else:
        ray_address = None
    n_cpus = cpus or 1
    return EnvReport(
        kind=kind,
        hosts=tuple(hosts),
        gpus_per_host=n_gpus,
        gpu_model=probe.model if n_gpus else None,
        ray_address=ray_address,
        num_workers=suggest_workers(len(hosts), n_gpus, n_cpus),
        node_rank=rank,
        cpus_per_host=n_cpus,
        details=details,
    )


# ---------------------------------------------------------------------------------------------
# Impure edges: probing this machine


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
            names = _lines(out)
            if names:
                return GpuInfo(len(names), names[0])
        except (OSError, subprocess.SubprocessError):
            pass
    from plantcad_flows.scoring.devices import cuda_devices

    n, name = cuda_devices()
    return GpuInfo(n, name) if n else GpuInfo()


def usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def detect(env: Mapping[str, str] | None = None, probe: bool = True) -> EnvReport:
    """Report on the current process (or on `env`); `probe=False` never touches the GPU."""
    env = os.environ if env is None else env
    return report_from_env(
        env,
        gpus=probe_gpus() if probe else None,
        cpus=usable_cpus(),
        hostname=socket.gethostname(),
    )


def format_report(report: EnvReport) -> str:
    rows = [
        ("kind", report.kind),
        ("hosts", ", ".join(report.hosts)),
        ("node rank", "-" if report.node_rank is None else str(report.node_rank)),
        ("GPUs per host", str(report.gpus_per_host)),
        ("GPU model", report.gpu_model or "-"),
        ("CPUs per host", str(report.cpus_per_host)),
        ("Ray address", report.ray_address or "(local Ray)"),
        ("suggested workers", str(report.num_workers)),
    ]
    rows += [(k, v) for k, v in report.details.items()]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k.ljust(width)}  {v}" for k, v in rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="plantcad-flows env", description="Report where this run is and what it can use."
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--no-probe", action="store_true", help="do not look for GPUs")
    args = parser.parse_args(argv)
    report = detect(probe=not args.no_probe)
    print(json.dumps(report.to_dict(), indent=2) if args.json else format_report(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())


def run_environment() -> tuple[str, int]:
    """One line on where a run is (for its summary), and the worker count it suggests.

    Detection is informative only: a failure is logged and never fails a run."""
    try:
        r = detect()
    except Exception as e:
        import logging

        logging.getLogger(__name__).warning("environment detection failed: %s", e)
        return "unknown", 1
    gpus = f"{r.gpus_per_host} x {r.gpu_model}" if r.gpus_per_host else "no GPU"
    return (f"{r.kind}, {len(r.hosts)} host(s), {gpus} per host, suggested workers {r.num_workers}"), max(
        1, r.num_workers
    )
