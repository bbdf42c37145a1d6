"""Peak resident memory of a process and all its descendants, sampled from /proc (Linux).

The benchmarks start `plantcad-flows` as a child and poll here: every `interval` seconds the RSS
of the child and every process below it (Ray workers, threads are in their process) are summed,
and the largest sum is the tree's peak. A process that lives less than one interval can be
missed; the figures are lower bounds to within that.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time

from plantcad_flows.cluster.reaper import descendants


def _rss_bytes(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def tree_rss(root: int) -> int:
    return sum(_rss_bytes(pid) for pid in [root, *descendants(root)])


def run_measured(cmd: list[str], interval: float = 0.25, **popen) -> tuple[int, float, int, str]:
    """Run `cmd`; (return code, wall seconds, peak tree RSS in bytes, stdout+stderr)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **popen)
    peak = [0]
    done = threading.Event()

    def poll() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], tree_rss(proc.pid))
            done.wait(interval)

    watcher = threading.Thread(target=poll, daemon=True)
    watcher.start()
    out, _ = proc.communicate()
    done.set()
    watcher.join()
    return proc.returncode, time.perf_counter() - t0, peak[0], out


def cli_env(api_url: str, work) -> dict[str, str]:
    """This environment for a `plantcad-flows` child run against the server at `api_url`, with
    no other PREFECT_ setting leaking in and a client home of its own under `work`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    return env | {
        "PREFECT_API_URL": api_url,
        "PREFECT_HOME": str(work / "client-home"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "HF_HUB_OFFLINE": "1",
    }
