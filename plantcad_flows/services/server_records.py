"""Who owns the Prefect server on a local port: one small record per server this project starts.

A port on 127.0.0.1 is shared by everyone on the host, so "something answers /health there"
says nothing about whose server it is or how long it will live. Each server a plantcad-flows
command starts writes a record, host-wide and keyed by port (`plantcad-flows-prefect-PORT.json`
in the system's temporary directory): the server's pid and start time, the pid of the command
that started it, and whether it outlives that command (`plantcad-flows server`, `make server`,
`--keep-server`). A run that finds a server on its port reads the record:

* a server that outlives its starter, or one with no record (a `prefect server start` of the
  user's): shared, and never stopped by the run;
* a server that stops when another run ends: not borrowed; the run starts a private server on a
  free port instead.

A record whose server is gone (or whose pid now names another process) counts as absent.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from plantcad_flows.cluster.processes import start_token


@dataclass(frozen=True)
class ServerRecord:
    port: int
    pid: int  # the server process
    started: str  # its start time token (`processes.start_token`)
    owner: int  # the plantcad-flows command that started it
    outlives_owner: bool  # True: shared; False: it stops when `owner` ends
    command: str  # what started it, for the line a run prints

    def alive(self) -> bool:
        return start_token(self.pid) == self.started


def record_path(port: int) -> Path:
    return Path(tempfile.gettempdir()) / f"plantcad-flows-prefect-{port}.json"


def write_record(port: int, pid: int, outlives_owner: bool, command: str) -> ServerRecord | None:
    """Record the server `pid` on `port` as started by this process; None if it cannot be written
    (another user's record of a dead server in a sticky /tmp): the run still works, others then
    treat its server as unknown, which they share but never stop."""
    record = ServerRecord(port, pid, start_token(pid) or "", os.getpid(), outlives_owner, command)
    path = record_path(port)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(json.dumps(asdict(record)))
        os.replace(tmp, path)
    except OSError:
        tmp.unlink(missing_ok=True)
        return None
    return record


def read_record(port: int) -> ServerRecord | None:
    """The record of the live server on `port`, or None (no record, unreadable, or stale)."""
    try:
        record = ServerRecord(**json.loads(record_path(port).read_text()))
    except (OSError, ValueError, TypeError):
        return None
    return record if record.alive() else None


def remove_record(record: ServerRecord | None) -> None:
    """Remove `record` if the file still holds it (a later server on the port may have replaced it)."""
    if record is None:
        return
    path = record_path(record.port)
    try:
        if json.loads(path.read_text()) == asdict(record):
            path.unlink()
    except (OSError, ValueError):
        pass
