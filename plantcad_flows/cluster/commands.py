"""A grid cell's shell command: its own working directory, its output line by line, and a stop
that reaches every process it started.

* `Workspace`: two cells running at once on one machine must not both write `./outputs`. Each
  cell runs in a fresh directory of its own that links every entry of the launch directory (the
  checkout a worker's pull step entered, or where `--local` was started) except `outputs`, which is
  a real, empty directory. `python train.py` and `data/...` work as in the checkout; `outputs/`
  is the cell's alone. The directory is removed once the outputs are uploaded.
* `run_streaming`: the command runs in `bash -c` (`sh` without bash) in a session of its own, so
  that it and all its children form one process group. Output (stdout and stderr together) is
  handed to a callback line by line as it comes, with secret values already replaced. Whatever
  ends the caller (a cancelled flow run gets SIGTERM, which Prefect raises as an exception in the
  main thread) stops the whole group on the way out: a purged cell leaves no process behind. Should
  the caller be killed outright (SIGKILL), the kernel still sends the shell SIGTERM.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from plantcad_flows.cluster.processes import die_with_parent, stop_process_group
from plantcad_flows.secrets import is_secret_name, redact

OUTPUTS = "outputs"


@dataclass(frozen=True)
class Workspace:
    """A cell's working directory and its `outputs/`."""

    root: Path

    @property
    def outputs(self) -> Path:
        return self.root / OUTPUTS

    def remove(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)  # links are removed, never followed


def open_workspace(
    cell: str, launch_dir: str | os.PathLike, base: str | os.PathLike | None = None
) -> Workspace:
    """A fresh directory for `cell` linking the launch directory's entries but `outputs`.

    Args:
        cell: the cell's name (part of the directory's name, for `ps` and `ls`).
        launch_dir: where the flow run started (its entries are linked).
        base: where to create it; the system's temporary directory by default.
    """
    root = Path(tempfile.mkdtemp(prefix=f"grid-{cell}-", dir=base))
    launch = Path(launch_dir).resolve()
    for entry in sorted(launch.iterdir()):
        if entry.name != OUTPUTS:
            (root / entry.name).symlink_to(entry, target_is_directory=entry.is_dir())
    (root / OUTPUTS).mkdir()
    return Workspace(root)


def shell() -> str:
    return shutil.which("bash") or "/bin/sh"


def run_streaming(
    command: str,
    cwd: str | os.PathLike,
    env: Mapping[str, str],
    on_line: Callable[[str], None],
    secret_names: Iterable[str] = (),
    on_start: Callable[[int], None] | None = None,
) -> int:
    """Run `command` in a shell and return its exit status, streaming its output.

    Args:
        command: shell text.
        cwd: working directory.
        env: the complete environment of the command.
        on_line: called with each line of output (newline stripped, secrets redacted).
        secret_names: variables of `env` whose values are replaced in the output, besides the
            ones whose names look secret.
        on_start: called with the process id once the command started.
    """
    names = sorted({*secret_names, *(n for n in env if is_secret_name(n))})
    proc = subprocess.Popen(
        [shell(), "-c", command],
        cwd=cwd,
        env=dict(env),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
        errors="replace",
        bufsize=1,
        start_new_session=True,
        preexec_fn=die_with_parent(),  # a flow-run process killed hard takes the shell with it
    )
    try:
        if on_start is not None:
            on_start(proc.pid)
        assert proc.stdout is not None
        for line in proc.stdout:  # universal newlines: a progress bar's \r ends a line too
            on_line(redact(line.rstrip("\n"), env, names))
        return proc.wait()
    finally:
        # Reached early when the caller is being stopped (e.g. a cancelled flow run): stop the
        # command. After a normal exit, whatever it left running in its group goes too.
        if proc.poll() is None:
            stop_process_group(proc, timeout=10)
        else:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        if proc.stdout is not None:
            proc.stdout.close()
