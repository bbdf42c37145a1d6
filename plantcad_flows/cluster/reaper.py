"""A small watchdog that takes down what a CLI run started when the CLI dies without cleaning up.

`plantcad-flows eval` may start a Prefect server and a local Ray instance (GCS, raylet, dashboard
agents, workers). A SIGINT, or a SIGTERM (which the CLI turns into an orderly exit), runs the
cleanup code; a SIGKILL runs nothing. The kernel's parent-death signal (`die_with_parent` in
`processes.py`) covers a direct child, but Ray's agents are grandchildren: when their raylet dies
they linger for about a minute, and a Prefect server started without it stays up for good.

So the CLI starts this watchdog in a session of its own. Every `POLL_S` it records the CLI's
descendants (pid and start time, from /proc on Linux or `ps` elsewhere); when it sees that its
parent is gone it sends SIGTERM to every recorded process still alive with the same start time
(a pid reused by an unrelated process is left alone), then SIGKILL to those that outlive
`GRACE_S`, and exits. Processes are named by pid only, never by name. A run that ends normally
stops the watchdog first, and whatever it asked to spare (a `--keep-server` server, never
recorded) is not touched.

Run as `python -m plantcad_flows.cluster.reaper PARENT_PID [--spare PID ...]`.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

POLL_S = 0.25
GRACE_S = 5.0


def proc_stats() -> Iterator[tuple[int, list[str]]]:
    """(pid, the fields of /proc/PID/stat after the command name) of every process in /proc: the
    state letter first, then the parent pid; utime and stime at 11 and 12, the start time at 19."""
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                stat = f.read()
        except OSError:  # gone since the listing
            continue
        yield int(name), stat.rsplit(")", 1)[1].split()


def process_table() -> dict[int, tuple[int, str]]:
    """pid -> (parent pid, start time token) of every process this user can see."""
    if os.path.isdir("/proc/self"):
        # a zombie is already dead
        return {pid: (int(f[1]), f[19]) for pid, f in proc_stats() if f[0] != "Z"}
    out = subprocess.run(["ps", "-A", "-o", "pid=,ppid=,lstart="], capture_output=True, text=True).stdout
    table = {}
    for line in out.splitlines():
        parts = line.split(None, 2)
        if len(parts) == 3:
            table[int(parts[0])] = (int(parts[1]), parts[2].strip())
    return table


def descendants(pid: int, table: dict[int, tuple[int, str]] | None = None) -> dict[int, str]:
    """Every process below `pid` (children, their children, ...): pid -> start time token."""
    table = process_table() if table is None else table
    children: dict[int, list[int]] = {}
    for child, (parent, _) in table.items():
        children.setdefault(parent, []).append(child)
    found: dict[int, str] = {}
    stack = list(children.get(pid, []))
    while stack:
        p = stack.pop()
        if p not in found:
            found[p] = table[p][1]
            stack.extend(children.get(p, []))
    return found


def still_running(recorded: dict[int, str]) -> dict[int, str]:
    """The recorded processes that are alive and are still the same processes (same start time)."""
    table = process_table()
    return {p: t for p, t in recorded.items() if p in table and table[p][1] == t}


def _signal_all(pids, sig: int) -> None:
    for p in pids:
        try:
            os.kill(p, sig)
        except (ProcessLookupError, PermissionError):
            pass


def reap(recorded: dict[int, str], grace: float = GRACE_S) -> None:
    """SIGTERM every recorded process still alive, then SIGKILL what outlives `grace` seconds."""
    _signal_all(still_running(recorded), signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if not still_running(recorded):
            return
        time.sleep(0.1)
    _signal_all(still_running(recorded), signal.SIGKILL)


def watch(parent: int, spare: set[int]) -> None:
    """Record `parent`'s descendants until it dies, then reap them."""
    me = os.getpid()
    recorded: dict[int, str] = {}
    while os.getppid() == parent:
        table = process_table()
        spared = set(spare)
        for p in spare:  # a spared process's own children are spared too
            spared |= set(descendants(p, table))
        for p, t in descendants(parent, table).items():
            if p != me and p not in spared:
                recorded[p] = t
        recorded = {p: t for p, t in recorded.items() if p in table and table[p][1] == t}
        time.sleep(POLL_S)
    reap(recorded)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m plantcad_flows.cluster.reaper")
    parser.add_argument("parent", type=int)
    parser.add_argument("--spare", type=int, action="append", default=[])
    args = parser.parse_args(argv)
    # stopped by the CLI at a normal exit: leave quietly, touching nothing
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C is the CLI's to handle
    watch(args.parent, set(args.spare))
    return 0


if __name__ == "__main__":
    sys.exit(main())
