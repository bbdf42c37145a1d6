"""A real multi-process Ray cluster on loopback for tests, started and stopped by PID.

`start_ray_head` runs `ray start --head --block` as a child in its own process group, with every
port it would otherwise take by default chosen free (several engineers and CI jobs may run Ray on
one machine at once) and a short temp dir (Ray's AF_UNIX socket paths must stay under ~107 bytes).
`RayHead.stop` signals that process group, and then the head's worker processes by PID (Ray gives
each worker a process group of its own): never `ray stop`, which would stop every Ray instance of
the user on the machine.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from plantcad_flows.cluster.processes import free_port

RAY_BIN = Path(sys.executable).with_name("ray")


def _accepts(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


@dataclass
class RayHead:
    address: str  # host:port of the GCS, as `ray.init(address=...)` takes it
    client_address: str  # ray://host:port of the Ray Client server
    popen: subprocess.Popen
    temp_dir: Path
    log_path: Path
    stopped: bool = field(default=False)

    @property
    def port(self) -> int:
        return int(self.address.rsplit(":", 1)[1])

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, grace: float = 3.0) -> None:
        """SIGTERM the head's process group, SIGKILL it after `grace` s; remove the temp dir.

        `ray start --block` takes tens of seconds to shut its children down on SIGTERM; nothing
        of a throwaway test cluster needs a graceful end, so the grace period is short.
        """
        if self.stopped:
            return
        self.stopped = True
        pgid = self.popen.pid  # start_new_session: the group id is the child's pid
        # Ray puts each worker in a process group of its own: note them before the raylet goes.
        workers = [p for p in descendants(pgid) if _proc_stat(p) and _proc_stat(p)[2] != pgid]
        for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 10.0)):
            try:
                os.killpg(pgid, sig)
            except ProcessLookupError:
                break
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline and group_members(pgid):
                time.sleep(0.1)
            if not group_members(pgid):
                break
        for pid in workers:
            st = _proc_stat(pid)
            if st and st[0] != "Z" and st[2] == pid:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        try:
            self.popen.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        shutil.rmtree(self.temp_dir, ignore_errors=True)


def _proc_stat(pid: int) -> tuple[str, int, int] | None:
    """(state, ppid, pgid) of a process from /proc, or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    return fields[0], int(fields[1]), int(fields[2])


def _pids() -> list[int]:
    return [int(d) for d in os.listdir("/proc") if d.isdigit()]


def cmdline(pid: int) -> str:
    """The command line of `pid`, spaces for NULs ("" when it is gone)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes of a process group. Zombies are skipped: in a container
    whose PID 1 does not reap, the dead children of a killed group linger as zombies."""
    members = []
    for pid in _pids():
        st = _proc_stat(pid)
        if st and st[2] == pgid and st[0] != "Z":
            members.append(pid)
    return members


def descendants(pid: int) -> list[int]:
    """Live descendants of `pid`."""
    children: dict[int, list[int]] = {}
    for p in _pids():
        st = _proc_stat(p)
        if st and st[0] != "Z":
            children.setdefault(st[1], []).append(p)
    out, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def start_ray_head(
    num_cpus: int = 2, env: dict[str, str] | None = None, timeout: float = 90.0, attempts: int = 3
) -> RayHead:
    """Start `ray start --head --block` on 127.0.0.1 and wait until it serves a driver.

    A head that exits while starting is started again on fresh ports, up to `attempts` times:
    under pytest-xdist another worker may take a port between `free_port` and Ray binding it.

    Args:
        num_cpus: CPUs the head advertises (its workers' pool size).
        env: extra environment for the head and, through inheritance, its workers.
    """
    for attempt in range(1, attempts + 1):
        try:
            return _start_ray_head(num_cpus, env, timeout)
        except _HeadExited as e:
            if attempt == attempts:
                raise RuntimeError(str(e)) from None
    raise AssertionError("unreachable")


class _HeadExited(Exception):
    pass


def _start_ray_head(num_cpus: int, env: dict[str, str] | None, timeout: float) -> RayHead:
    temp_dir = Path(tempfile.mkdtemp(prefix="ray", dir="/tmp"))
    port, client_port = free_port(), free_port()
    log_path = temp_dir / "head.log"
    cmd = [
        str(RAY_BIN),
        "start",
        "--head",
        "--block",
        "--node-ip-address",
        "127.0.0.1",
        "--port",
        str(port),
        "--ray-client-server-port",
        str(client_port),
        "--num-cpus",
        str(num_cpus),
        "--num-gpus",
        "0",
        "--temp-dir",
        str(temp_dir),
        "--include-dashboard",
        "false",
        "--dashboard-agent-listen-port",
        str(free_port()),
        "--dashboard-agent-grpc-port",
        str(free_port()),
        "--runtime-env-agent-port",
        str(free_port()),
        "--metrics-export-port",
        str(free_port()),
        "--node-manager-port",
        str(free_port()),
        "--object-manager-port",
        str(free_port()),
        "--disable-usage-stats",
    ]
    child_env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", **(env or {})}
    log = open(log_path, "wb")
    popen = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=child_env, start_new_session=True)
    head = RayHead(f"127.0.0.1:{port}", f"ray://127.0.0.1:{client_port}", popen, temp_dir, log_path)
    deadline = time.monotonic() + timeout
    # The GCS port opens before the raylet registers; the client server opens last, once the node
    # is up, so waiting for it means a driver can connect and schedule.
    while time.monotonic() < deadline:
        if popen.poll() is not None:
            text = head.log()[-3000:]  # before stop() removes the temp dir holding it
            head.stop()
            raise _HeadExited(f"ray start exited with {popen.returncode}:\n{text}")
        if _accepts("127.0.0.1", port) and _accepts("127.0.0.1", client_port):
            return head
        time.sleep(0.25)
    text = head.log()[-3000:]
    head.stop()
    raise TimeoutError(f"ray head not ready after {timeout}s:\n{text}")


def worker_pids(head: RayHead) -> list[int]:
    """PIDs of the head's Python worker processes: Ray titles them `ray::IDLE` or `ray::{task}`
    (the dashboard and runtime-env agents, `ray::DashboardAgent` etc., are left out)."""
    agents = ("ray::DashboardAgent", "ray::RuntimeEnvAgent")
    return [
        p
        for p in descendants(head.popen.pid)
        if cmdline(p).startswith("ray::") and not cmdline(p).startswith(agents)
    ]


def busy_worker_pids(head: RayHead, task_name: str) -> list[int]:
    """PIDs of workers running `task_name` now: Ray sets a worker's title to `ray::{task name}`
    while the task runs."""
    return [p for p in descendants(head.popen.pid) if cmdline(p).split(" ")[0] == f"ray::{task_name}"]
