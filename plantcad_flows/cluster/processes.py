"""Processes this project starts and must stop: local servers, Ray heads, commands of a cell.

Each is started in a session of its own, so that it and its children form one process group
that is stopped by its PID, never by a name (which would hit other people's processes).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess

LOOPBACK = "127.0.0.1"


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
    with socket.socket() as s:
        try:
            s.bind((host, port))
            return True
        except OSError:
            return False
