"""A run's progress: counted per shard (examples), cached and failed cells apart, and the UI
artifact moved by each shard's callback, before its cell has an outcome."""

from __future__ import annotations

from types import SimpleNamespace

from plantcad_flows.results.progress import RunProgress


def test_progress_moves_per_shard_and_counts_cached_cells_apart():
    p = RunProgress(cells_planned=4, started=0.0)
    p.cell_done("a", "cached")
    p.shards_submitted("b", [50, 50])
    p._first_shard_at = 0.0
    assert p.percent == 25.0
    p.shard_done("b", 50)
    assert 25.0 < p.percent < 50.0  # one big cell moves before it ends
    p.shard_done("b", 50)
    p.cell_done("b", "completed")
    assert p.percent == 50.0
    line = p.line(now=10.0)
    assert (
        line
        == " 50% | cells 2/4 (1 cached) | shards 2/2 | 100/100 examples | 10/s | finishing | 0:10 elapsed"
    )


class _Future:
    """A shard future: holds its done callbacks until the test finishes it."""

    def __init__(self):
        self.callbacks, self.state = [], SimpleNamespace(is_completed=lambda: True)

    def add_done_callback(self, fn):
        self.callbacks.append(fn)

    def finish(self):
        for fn in self.callbacks:
            fn(self)


def test_the_ui_artifact_moves_with_each_shard(monkeypatch):
    import tasks.progress as progress_module

    sent: list[float] = []
    monkeypatch.setattr(progress_module, "create_progress_artifact", lambda progress, **kw: "artifact-id")
    monkeypatch.setattr(
        progress_module, "update_progress_artifact", lambda _id, progress: sent.append(progress)
    )
    ledger = SimpleNamespace(planned=[object()], results={})  # one big cell
    progress = progress_module.Progress(ledger, min_interval_s=0.0)
    futures = [_Future() for _ in range(4)]
    progress.track_shards("big", futures, [25, 25, 25, 25])
    for f in futures[:3]:
        f.finish()
    assert sent == [22.5, 45.0, 67.5]  # 90 % of the cell is its scoring, in proportion to examples
    ledger.results["big"] = SimpleNamespace(status="completed")
    futures[3].finish()
    progress.cell_done("big")
    progress.finish()
    assert sent[-2:] == [100.0, 100.0] and progress.counts.outcomes == {"completed": 1}


def test_the_run_log_on_a_full_disk_stops_quietly(capsys):
    """The log file lives under the prefix, the disk a failing run may have filled: no traceback
    per record on the console, and the report says the log is incomplete."""
    import logging
    import os
    from pathlib import Path

    from plantcad_flows.cli.console import RunLogFile

    if not os.path.exists("/dev/full"):
        import pytest

        pytest.skip("no /dev/full here")
    handler = RunLogFile(Path("/dev/full"))
    logger = logging.getLogger("plantcad.test.full-disk")
    logger.addHandler(handler)
    try:
        for i in range(3):
            logger.warning("record %d", i)
    finally:
        logger.removeHandler(handler)
        handler.close()
    assert capsys.readouterr().err == ""
    assert handler.problem and "No space left on device" in handler.problem
    assert handler.describe().startswith("/dev/full (incomplete: OSError: [Errno 28]")


def test_the_quiet_console_keeps_alerts_and_one_line_per_problem():
    import logging

    from plantcad_flows.cli.console import OneLine, Quiet
    from plantcad_flows.results.progress import CONSOLE

    def record(name, level, msg, **extra):
        r = logging.LogRecord(name, level, __file__, 1, msg, (), None)
        r.__dict__.update(extra)
        return r

    quiet = Quiet()
    assert not quiet.filter(record("prefect.task_runs", logging.INFO, "Finished in state Completed()"))
    assert not quiet.filter(record("prefect.task_runs", logging.ERROR, "Task run failed with exception"))
    assert not quiet.filter(record("prefect.client", logging.WARNING, "retrying"))
    assert quiet.filter(record("prefect.flow_runs", logging.WARNING, "regression: m", **{CONSOLE: True}))
    assert quiet.filter(record("plantcad_flows.scoring", logging.WARNING, "batch size lowered"))
    try:
        raise OSError(28, "No space left on device")
    except OSError:
        import sys

        failed = logging.LogRecord(
            "x", logging.ERROR, __file__, 1, "write failed\nline 2", (), sys.exc_info()
        )
    assert OneLine("%(message)s").format(failed) == "write failed"  # no traceback, first line only


def test_the_live_line_in_a_file_prints_at_intervals_the_last_state_and_never_twice():
    import io
    import logging

    from plantcad_flows.cli.console import LiveLine

    out = io.StringIO()
    live = LiveLine(out, every_s=3600)

    def emit(text, **extra):
        r = logging.LogRecord("plantcad.progress", logging.INFO, __file__, 1, text, (), None)
        r.__dict__.update(extra)
        live.emit(r)

    emit("10%")  # the first state is printed
    emit("20%")  # within the interval: held
    emit("30%")
    emit("30%", final=True)  # the last state, once
    emit("30%", final=True)
    live.close_line()
    assert out.getvalue() == "10%\n30%\n"


def test_on_a_terminal_a_warning_wipes_the_live_line_first():
    import io
    import logging

    from plantcad_flows.cli.console import ClearsLiveLine, LiveLine

    class Tty(io.StringIO):
        def isatty(self):
            return True

    out = Tty()
    live = LiveLine(out)
    live.emit(logging.LogRecord("plantcad.progress", logging.INFO, __file__, 1, " 50% | cells 1/2", (), None))
    console = logging.StreamHandler(out)
    console.addFilter(ClearsLiveLine(live))
    console.handle(logging.LogRecord("x", logging.WARNING, __file__, 1, "batch size lowered", (), None))
    assert out.getvalue() == "\r\x1b[2K 50% | cells 1/2\r\x1b[2Kbatch size lowered\n"
