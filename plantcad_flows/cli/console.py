"""What a run shows on the terminal: one live progress line, one line per problem, and a log file.

Prefect prints a line per task run state change (about 140 for the demo) and a full traceback
per failure, and Ray forwards every worker's output; on a terminal that buries what matters. So,
for the duration of a CLI run and unless `-v` is given:
* Prefect's flow- and task-run records and its INFO/WARNING records are kept off the console
  (they still reach the Prefect UI, through Prefect's API handler, and the log file);
* whatever else reaches the console is one line: its message's first line, without traceback;
* transformers' progress bars and load reports go to the log file only;
* the `plantcad.progress` line (tasks/progress.py) is rewritten in place on a terminal, and
  printed every `EVERY_S` seconds (and at the end) when the output is a file or a pipe;
* every record Prefect's loggers emit, tracebacks included, goes to the run's log file, whose
  path the CLI prints at the start and with any failure.
"""

from __future__ import annotations

import copy
import logging
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO

from plantcad_flows.results.progress import CONSOLE, PROGRESS_LOGGER
from plantcad_flows.scoring.console import transformers_to_file

EVERY_S = 15.0
_RUN_LOGGERS = ("prefect.flow_runs", "prefect.task_runs")


class OneLine(logging.Formatter):
    """A record's first line, without its traceback (that is in the log file and the UI)."""

    def format(self, record: logging.LogRecord) -> str:
        plain = copy.copy(record)
        plain.exc_info = plain.exc_text = plain.stack_info = None
        first = record.getMessage().strip().splitlines()
        plain.msg, plain.args = (first[0] if first else ""), ()
        return super().format(plain)


class ClearsLiveLine(logging.Filter):
    """On a console handler: wipes the live progress line before the handler writes."""

    def __init__(self, live: LiveLine):
        super().__init__()
        self.live = live

    def filter(self, record: logging.LogRecord) -> bool:
        self.live.clear()
        return True


class Quiet(logging.Filter):
    """Drops Prefect's per-run records and its records below ERROR, except those the flow marks
    for the console (`extra={CONSOLE: True}`: a regression alert, "nothing new since")."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, CONSOLE, False):
            return True
        if record.name.startswith(_RUN_LOGGERS):
            return False
        return not (record.name.startswith("prefect") and record.levelno < logging.ERROR)


class LiveLine(logging.Handler):
    """The progress line: in place on a terminal; elsewhere at most every `every_s` seconds."""

    def __init__(self, stream: TextIO, every_s: float = EVERY_S):
        super().__init__()
        self.stream, self.every_s = stream, every_s
        self.tty = stream.isatty()
        self._last: float | None = None  # when a line was last written (a file or pipe)
        self._open = False
        self._pending: str | None = None
        self._printed: str | None = None  # the last line written (a file or pipe: never twice)

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        try:
            if self.tty:
                self.stream.write("\r\x1b[2K" + text)
                self._open = True
            elif text == self._printed:
                return
            elif (
                self._last is None
                or time.monotonic() - self._last >= self.every_s
                or getattr(record, "final", False)
            ):
                self.stream.write(text + "\n")
                self._last, self._pending, self._printed = time.monotonic(), None, text
                return
            else:
                self._pending = text
            self.stream.flush()
        except Exception:
            self.handleError(record)

    def clear(self) -> None:
        """Wipe the live line before another line is written to the terminal (it is redrawn
        with the next update), so that a warning never lands at the end of it."""
        if self._open:
            self.stream.write("\r\x1b[2K")
            self.stream.flush()
            self._open = False

    def close_line(self) -> None:
        """End the live line (a terminal), or print the last state not yet printed."""
        if self._open:
            self.stream.write("\n")
            self._open = False
        elif self._pending:
            self.stream.write(self._pending + "\n")
            self._pending = None
        self.stream.flush()


class RunLogFile(logging.FileHandler):
    """The run's log file. It may live on the disk that filled up and failed the run: then it
    stops writing, quietly (logging's own error report would print a traceback per record, and
    Prefect's print-to-log turns that into a recursion), and says so in `problem`."""

    def __init__(self, path: Path):
        super().__init__(path, encoding="utf-8", delay=True)
        self.problem: str | None = None

    def emit(self, record: logging.LogRecord) -> None:
        if self.problem is None:
            super().emit(record)

    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802 (logging's name)
        error = sys.exc_info()[1]
        self.problem = f"incomplete: {type(error).__name__}: {error}" if error else "incomplete"

    def close(self) -> None:
        try:
            super().close()
        except OSError as e:
            self.problem = self.problem or f"incomplete: {e}"

    def describe(self) -> str:
        return f"{self.baseFilename}" + (f" ({self.problem})" if self.problem else "")


def run_log_path(prefix: str, started: float | None = None) -> Path:
    """The run's log file: `{prefix}/logs/eval-YYYYmmdd-HHMMSS-PID.log` for a local prefix,
    `outputs/logs/...` beside the command for a remote one."""

    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(started or time.time()))
    base = Path(prefix) if "://" not in prefix else Path("outputs")
    return (base / "logs" / f"eval-{stamp}-{os.getpid()}.log").absolute()


@contextmanager
def run_console(log_path: Path, verbose: bool = False) -> Iterator[RunLogFile]:
    """Quiet the console, show the live progress line, and log everything to `log_path`."""
    from prefect.logging.handlers import PrefectConsoleHandler

    to_file = RunLogFile(log_path)
    try:
        log_path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        to_file.problem = f"not written: {e}"
    root = logging.getLogger()
    to_file.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    root.addHandler(to_file)
    consoles = [h for h in root.handlers if isinstance(h, PrefectConsoleHandler)]
    quiet, one_line = Quiet(), OneLine("%(message)s")
    formatters = {h: h.formatter for h in consoles}
    if not verbose:
        for h in consoles:
            h.addFilter(quiet)
            h.setFormatter(one_line)
    quiet_transformers = transformers_to_file(to_file) if not verbose else None
    progress = logging.getLogger(PROGRESS_LOGGER)
    live = LiveLine(sys.stderr)
    progress.addHandler(live)
    clears = ClearsLiveLine(live)
    for h in consoles:
        h.addFilter(clears)
    previous = (progress.level, progress.propagate)
    progress.setLevel(logging.INFO)
    progress.propagate = False
    try:
        yield to_file
    finally:
        live.close_line()
        progress.removeHandler(live)
        progress.setLevel(previous[0])
        progress.propagate = previous[1]
        for h in consoles:
            h.removeFilter(clears)
            h.removeFilter(quiet)
            h.setFormatter(formatters[h])
        if quiet_transformers is not None:
            quiet_transformers()
        root.removeHandler(to_file)
        to_file.close()
