"""Helpers for the fault tests and the soak benchmark: `plantcad-flows eval` as a process, killed
at a point read from the storage prefix; the processes it started; what its files say.

Kill points are found by watching the prefix (a prepare directory, a shard's sidecar, a cell
whose shards are all in but not yet finished), never by anything in the product. The processes a
CLI started are recorded while it runs (pid and start time, `cluster/reaper.py`), so that after a
kill the test can tell whether any of them, and only them, is still alive.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from plantcad_flows.cluster.reaper import descendants, still_running
from plantcad_flows.layout.integrity import shard_ok, step_file_ok
from plantcad_flows.layout.storage import SUCCESS, read_json, to_path

VENV_BIN = Path(sys.executable).parent
CLI = VENV_BIN / "plantcad-flows"
REPO = Path(__file__).resolve().parents[1]


@dataclass
class EvalProcess:
    popen: subprocess.Popen
    log: Path
    started: dict[int, str] = field(default_factory=dict)  # descendants seen while it ran
    names: dict[int, str] = field(default_factory=dict)  # their command lines, read when first seen

    def record(self) -> None:
        for pid, start in descendants(self.popen.pid).items():
            self.started.setdefault(pid, start)
            name = _cmdline(pid)  # read again: a fork shows its parent's until it execs
            if name not in ("?", ""):
                self.names[pid] = name

    def started_names(self) -> str:
        return " | ".join(self.names.values())

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


def start_eval(
    config: Path, cwd: Path, env: dict[str, str], *args: str, log_name: str = "eval"
) -> EvalProcess:
    log = cwd / f"{log_name}-{time.monotonic_ns()}.log"
    with open(log, "wb") as out:
        popen = subprocess.Popen(
            [str(CLI), "eval", str(config), *args],
            cwd=cwd,
            env={**env, "PYTHONPATH": str(REPO)},
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    proc = EvalProcess(popen, log)
    STARTED.append(proc)
    return proc


# every CLI started here, so that a test that fails while one still runs does not leave it behind
STARTED: list[EvalProcess] = []


def kill_leftovers() -> None:
    """SIGKILL each CLI started here that is still running (its process group; the server and the
    Ray instance it started die with it: death signal and reaper)."""
    while STARTED:
        popen = STARTED.pop().popen
        if popen.poll() is None:
            try:
                os.killpg(popen.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            popen.wait(timeout=30)


def watch(
    proc: EvalProcess,
    until: Callable[[], bool],
    timeout: float,
    poll: float = 0.02,
    record_every: float = 0.2,
) -> bool:
    """Record the CLI's descendants until `until()` holds (True) or the CLI exits (False).

    `until()` is checked every `poll` s, so the kill lands close to its point; the process table is
    read every `record_every` s (as the CLI's own watchdog does) and once more when `until()` holds.
    One read takes 1.6 ms of CPU with 67 processes on the machine, more while the suite runs; at
    every check it would take a core's 8 % or more for as long as a CLI runs."""
    deadline = time.monotonic() + timeout
    recorded = 0.0
    while proc.popen.poll() is None:
        if time.monotonic() - recorded >= record_every:
            proc.record()
            recorded = time.monotonic()
        if until():
            proc.record()
            return True
        if time.monotonic() > deadline:
            raise TimeoutError(f"kill point not reached in {timeout:.0f}s:\n{proc.output()[-3000:]}")
        time.sleep(poll)
    return False


def kill_at(proc: EvalProcess, until: Callable[[], bool], timeout: float = 300, sig=signal.SIGKILL) -> bool:
    """Send `sig` to the CLI (its pid only) when `until()` first holds; False if it finished first."""
    if not watch(proc, until, timeout):
        return False
    os.kill(proc.popen.pid, sig)
    proc.popen.wait(timeout=120)
    return True


def wait_gone(processes: dict[int, str], timeout: float = 30) -> dict[int, str]:
    """The recorded processes still alive after up to `timeout` s (empty when all are gone)."""
    deadline = time.monotonic() + timeout
    while (alive := still_running(processes)) and time.monotonic() < deadline:
        time.sleep(0.2)
    return alive


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_text().replace(chr(0), " ").strip()[:160]
    except OSError:
        return "?"


def describe(processes: dict[int, str]) -> list[str]:
    return [f"{pid}: {_cmdline(pid)}" for pid in processes]


def run_eval(config: Path, cwd: Path, env: dict[str, str], *args: str, timeout: float = 600):
    proc = start_eval(config, cwd, env, *args)
    try:
        proc.popen.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.popen.pid, signal.SIGKILL)
        raise
    return proc


# ------------------------------------------------------------------ what the prefix says


def dirs(prefix: str | Path, step: str) -> list:
    root = to_path(str(prefix))
    root.fs.invalidate_cache()  # object stores' listings are cached; a poll must see new files
    try:
        return sorted((p for p in root.iterdir() if p.name.startswith(step + "-")), key=str)
    except (FileNotFoundError, NotADirectoryError):  # not there yet (or only a write probe was)
        return []


def shard_files(prefix: str | Path) -> list:
    out = []
    for d in dirs(prefix, "score_cell"):
        try:
            out += sorted((p for p in (d / "shards").iterdir() if p.name.endswith(".parquet")), key=str)
        except (FileNotFoundError, NotADirectoryError):
            continue
    return out


def verified_shards(prefix: str | Path) -> dict[str, str]:
    """Shards whose sidecar vouches for them -> a token of the file's version (rewritten or not)."""
    out = {}
    for p in shard_files(prefix):
        if shard_ok(p):
            info = p.fs.info(p.path)
            out[str(p)] = "|".join(str(info.get(k)) for k in ("ino", "mtime", "ETag", "LastModified"))
    return out


def false_completions(prefix: str | Path) -> list[str]:
    """Steps marked complete whose files do not match their records: must always be empty."""
    bad = []
    for d in dirs(prefix, "prepare_split"):
        if (d / SUCCESS).exists() and not step_file_ok(d, "examples.parquet"):
            bad.append(str(d))
    for d in dirs(prefix, "score_cell"):
        if not (d / SUCCESS).exists():
            continue
        n = int(read_json(d / SUCCESS).get("num_shards", 0))
        names = [f"shard-{i:05d}-of-{n:05d}.parquet" for i in range(n)]
        if not n or not all(shard_ok(d / "shards" / x) for x in names):
            bad.append(str(d))
        elif not step_file_ok(d, "predictions.parquet"):
            bad.append(str(d))
    return bad


def first_sidecar(prefix: str | Path) -> Callable[[], bool]:
    return lambda: any(str(p).endswith(".parquet") and _has_sidecar(p) for p in shard_files(prefix))


def _has_sidecar(p) -> bool:
    return p.with_name(p.name + ".json").exists()


def any_prepare_dir(prefix: str | Path) -> Callable[[], bool]:
    return lambda: bool(dirs(prefix, "prepare_split"))


def cell_scored_not_finished(prefix: str | Path, shards_per_cell: int) -> Callable[[], bool]:
    """A cell whose shards all have sidecars but that is not marked complete yet."""

    def check() -> bool:
        for d in dirs(prefix, "score_cell"):
            shards = d / "shards"
            if (d / SUCCESS).exists() or not shards.exists():
                continue
            if sum(1 for p in shards.iterdir() if p.name.endswith(".parquet.json")) >= shards_per_cell:
                return True
        return False

    return check


def metrics_by_cell(results_json: Path) -> dict[str, str]:
    """cell -> its metrics as canonical JSON (NaN equal to NaN), from a --results-json file."""
    rows = json.loads(results_json.read_text())
    out: dict[str, dict] = {}
    for r in rows:
        key = f"{r['model']}/{r['task']}/{r['split']}"
        out.setdefault(key, {})
        out[key].update({k: v for k, v in r.items() if k not in ("status", "cached", "run", "timings")})
    return {k: json.dumps(v, sort_keys=True, default=str) for k, v in out.items()}


# ------------------------------------------------------------------ an endpoint that can go away


class TcpProxy:
    """127.0.0.1:port forwarding to `target`; `stop()` refuses and drops every connection (the
    endpoint is gone), `start()` listens again on the same port. The server behind it, and its
    data, are untouched: an outage of the endpoint, not a loss of the store."""

    def __init__(self, target: tuple[str, int], port: int):
        self.target = target
        self.port = port
        self._listener: socket.socket | None = None
        self._conns: set[socket.socket] = set()
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", self.port))
        s.listen(64)
        self._listener = s
        threading.Thread(target=self._accept, args=(s,), daemon=True).start()

    def stop(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.close()
        with self._lock:
            conns, self._conns = self._conns, set()
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            c.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=10)
            except OSError:
                client.close()
                continue
            with self._lock:
                if self._listener is not listener:  # stopped meanwhile
                    client.close()
                    upstream.close()
                    return
                self._conns |= {client, upstream}
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


# ------------------------------------------------------------------ Redis, for the Redis lock manager


def start_redis(directory: Path) -> tuple[str, subprocess.Popen]:
    """`redis-server` on a free loopback port (its own session, no persistence); (url, process).
    Stop it with `servers.stop(process)`."""
    import shutil

    import redis

    from plantcad_flows.cluster.processes import free_port

    exe = shutil.which("redis-server")
    if exe is None:
        raise FileNotFoundError("redis-server is not installed")
    port = free_port()
    proc = subprocess.Popen(
        [
            exe,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(directory),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    url = f"redis://127.0.0.1:{port}/0"
    deadline = time.monotonic() + 30
    while True:
        try:
            redis.Redis.from_url(url).ping()
            return url, proc
        except redis.ConnectionError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError("redis-server did not start") from None
            time.sleep(0.1)
