"""Processes this project starts and must stop: local servers, Ray heads, commands of a cell.

Each is started in a session of its own, so that it and its children form one process group
that is stopped by its PID, never by a name (which would hit other people's processes).
"""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Iterable

LOOPBACK = "127.0.0.1"
_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


def die_with_parent(sig: int = signal.SIGTERM) -> Callable[[], None] | None:
    """A `preexec_fn` that has the kernel send `sig` to the child when the process that started
    it dies, however it dies (SIGKILL included). Linux only; None elsewhere (the reaper covers
    other systems: `start_reaper`).

    The signal follows the *thread* that forked the child, so start such children from the main
    thread of a process that outlives them.
    """
    if not sys.platform.startswith("linux"):
        return None

    parent = os.getpid()
    prctl = ctypes.CDLL(None, use_errno=True).prctl  # resolved before the fork: the child only calls

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
        if os.getppid() != parent:  # the parent died before the request took effect
            os.kill(os.getpid(), sig)

    return preexec


def start_reaper(spare: Iterable[int] = ()) -> subprocess.Popen:
    """Start the watchdog that takes this process's descendants down if this process dies without
    cleaning up (SIGKILL); stop it with `stop_reaper` at a normal exit. See `cluster/reaper.py`."""
    cmd = [sys.executable, "-m", "plantcad_flows.cluster.reaper", str(os.getpid())]
    for pid in spare:
        cmd += ["--spare", str(pid)]
    return subprocess.Popen(
        cmd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def stop_reaper(proc: subprocess.Popen | None) -> None:
    """Tell the watchdog that this process is exiting normally: it leaves without touching anything."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


def stop_process_group(proc: subprocess.Popen | None, timeout: float = 20) -> None:
    """Stop a process started in its own session, and its children: SIGTERM, then SIGKILL."""
    if proc is None or proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    except ProcessLookupError:
        pass


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def port_free(port: int, host: str = LOOPBACK) -> bool:
    """Nothing listens on `port`. Connections of a server that just stopped (TIME_WAIT) do not
    count: a server binds with SO_REUSEADDR, as uvicorn does, so the port is free to it."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
            return True
        except OSError:
            return False


def start_token(pid: int) -> str | None:
    """The start time of process `pid` (clock ticks since boot, /proc/PID/stat field 22), which
    tells a live process from a later one given the same pid; None when it is gone. Elsewhere than
    Linux: "alive" for a live process, since the pid is all there is to go on."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except FileNotFoundError:
        if os.path.isdir("/proc/self"):
            return None
    except OSError:
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass
    return "alive"


def _listening_inodes(port: int) -> set[str] | None:
    """Socket inodes listening on TCP `port` (IPv4 and IPv6), from /proc/net; None without /proc."""
    found: set[str] = set()
    tables = [p for p in ("/proc/net/tcp", "/proc/net/tcp6") if os.path.exists(p)]
    if not tables:
        return None
    for table in tables:
        with open(table) as f:
            next(f, None)
            for line in f:
                fields = line.split()
                # local address "HEX_IP:HEX_PORT", state 0A is LISTEN, inode is field 9
                if len(fields) > 9 and fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                    found.add(fields[9])
    return found


def listens_on(port: int, pids: Iterable[int]) -> bool | None:
    """Whether one of `pids` holds the listening socket on `port`: that a server answering there is
    the process we started, not another one that took the port first. None where /proc cannot
    tell (not Linux)."""
    inodes = _listening_inodes(port)
    if inodes is None:
        return None
    wanted = {f"socket:[{i}]" for i in inodes}
    for pid in pids:
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}") in wanted:
                    return True
            except OSError:
                continue
    return False
