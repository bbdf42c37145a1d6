"""Where a command's CPU goes, by kind of process: the test suite by default.

The command runs as a child; every `--interval` seconds /proc is read and each process below it is
recorded (pid and start time, so a reused pid is a new process) with its CPU time (user + system)
so far. A process keeps the last value read, and stays tracked after its parent dies (Ray and
Prefect processes are reparented when their starter exits). Then the CPU-seconds are summed per
kind: `plantcad-flows eval` runs, other `plantcad-flows` commands, Ray workers, Ray's own daemons,
Prefect servers, deployment flow runs, pytest (xdist) workers, the rest.

A process that lives less than one interval can be missed, and a process's CPU after its last
read is lost: the figures are lower bounds. The suite is CPU-bound when the total is close to
wall time x cores; then its time follows the CPU its processes use, and this table says which.

    python benchmarks/suite_cpu.py                       # make test's pytest command
    python benchmarks/suite_cpu.py -- pytest -q tests/test_cli.py
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

HZ = os.sysconf("SC_CLK_TCK")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
from ray_cluster import cmdline  # noqa: E402

from plantcad_flows.cluster.reaper import descendants, proc_stats  # noqa: E402

# (kind, substring of the command line); the first that matches
KINDS: tuple[tuple[str, str], ...] = (
    ("plantcad-flows eval", "bin/plantcad-flows eval "),
    ("other plantcad-flows commands", "bin/plantcad-flows "),
    ("Ray workers", "ray/_private/workers/"),
    ("Ray daemons (GCS, raylet, agents)", "/ray/"),
    ("Ray daemons (GCS, raylet, agents)", "bin/ray "),
    ("Prefect servers", "prefect server start"),
    ("deployment flow runs", "prefect.runner._workspace_supervisor"),
    ("other Prefect commands", "bin/prefect"),
    ("pytest workers", "exec(eval(sys.stdin.readline()))"),
    ("pytest", "pytest"),
)


def _table() -> dict[int, tuple[int, str, float, str]]:
    """pid -> (parent pid, start time token, CPU seconds so far, state letter)."""
    return {pid: (int(f[1]), f[19], (int(f[11]) + int(f[12])) / HZ, f[0]) for pid, f in proc_stats()}


def kind_of(command: str) -> str:
    return next((kind for kind, needle in KINDS if needle in command), "other")


def sample(root: int, interval: float) -> dict[tuple[int, str], list]:
    """Poll until `root` exits: (pid, start) -> [command line, CPU seconds at the last read]."""
    seen: dict[tuple[int, str], list] = {}
    while True:
        table = _table()
        below = {root, *descendants(root, {pid: (ppid, start) for pid, (ppid, start, *_) in table.items()})}
        for pid, (_, start, cpu, _) in table.items():
            key = (pid, start)
            if key in seen:
                seen[key][1] = cpu
                if not seen[key][0]:  # a fork shows its parent's command line until it execs
                    seen[key][0] = cmdline(pid)
            elif pid in below:
                seen[key] = [cmdline(pid), cpu]
        if root not in table or table[root][3] == "Z":
            return seen
        time.sleep(interval)


def report(seen: dict[tuple[int, str], list], wall: float, cores: int, top: int = 0) -> str:
    per: dict[str, list[float]] = {}
    for command, cpu in seen.values():
        entry = per.setdefault(kind_of(command), [0, 0.0])
        entry[0] += 1
        entry[1] += cpu
    total = sum(v[1] for v in per.values())
    lines = [f"{'kind':36} {'processes':>9} {'CPU s':>8} {'share':>6}"]
    for kind, (n, cpu) in sorted(per.items(), key=lambda kv: -kv[1][1]):
        lines.append(f"{kind:36} {n:9d} {cpu:8.1f} {cpu / total if total else 0:6.1%}")
    lines.append(f"{'total':36} {len(seen):9d} {total:8.1f}")
    lines.append(
        f"wall {wall:.1f} s on {cores} cores: {cores * wall:.1f} CPU-seconds available, "
        f"{total / (cores * wall) if wall else 0:.0%} used by the command's processes"
    )
    if top:
        lines.append(f"the {top} processes that used the most CPU:")
        for command, cpu in sorted(seen.values(), key=lambda v: -v[1])[:top]:
            lines.append(f"{cpu:8.1f}  {command[:150]}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--interval", type=float, default=0.3, help="seconds between reads of /proc")
    parser.add_argument("--top", type=int, default=0, help="also list the N costliest processes")
    parser.add_argument("command", nargs="*", help="the command to measure (after --)")
    args = parser.parse_args(argv)
    workers = str(max(2, os.cpu_count() or 2))
    command = args.command or [
        sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-n", workers, "--dist", "loadgroup",
    ]  # fmt: skip
    t0 = time.monotonic()
    proc = subprocess.Popen(command, cwd=REPO)
    seen = sample(proc.pid, args.interval)
    rc = proc.wait()
    wall = time.monotonic() - t0
    print(f"$ {' '.join(command)}  (exit {rc})")
    print(report(seen, wall, os.cpu_count() or 1, args.top))
    return rc


if __name__ == "__main__":
    sys.exit(main())
