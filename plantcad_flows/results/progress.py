"""How far a run is: cells and shards done of planned, examples scored, rate and ETA.

One object per run, fed by the flow as shards and cells finish (from the threads that run their
callbacks, hence the lock), read by the UI's progress artifact and the terminal's live line. A
cell counts in whole once it has an outcome; until then its shards move it, in proportion to the
examples they scored, so one big cell no longer sits at 0 % until it ends. Cached and skipped
cells are counted apart: they cost nothing, and an ETA that counted them would lie.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

# what a cell's shards are worth before its outcome is in (finalize: merge, metrics, plots)
SCORED_SHARE = 0.9
# the logger the flow writes the line to, and the CLI shows live (cli/console.py)
PROGRESS_LOGGER = "plantcad.progress"
# a run-log record's `extra` key that keeps it on the quiet console (a regression alert)
CONSOLE = "plantcad_console"


@dataclass
class RunProgress:
    cells_planned: int
    started: float = field(default_factory=time.monotonic)
    shards_planned: int = 0
    shards_done: int = 0
    examples_planned: int = 0
    examples_done: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)  # status -> cells
    _cells: dict[str, list[int]] = field(default_factory=dict)  # cell -> [examples done, planned]
    _finished: set[str] = field(default_factory=set)
    _first_shard_at: float | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def shards_submitted(self, cell_id: str, sizes: list[int]) -> None:
        with self._lock:
            self.shards_planned += len(sizes)
            self.examples_planned += sum(sizes)
            done, planned = self._cells.get(cell_id, [0, 0])
            self._cells[cell_id] = [done, planned + sum(sizes)]
            if self._first_shard_at is None:
                self._first_shard_at = time.monotonic()

    def shard_done(self, cell_id: str, size: int, ok: bool = True) -> None:
        with self._lock:
            self.shards_done += 1
            if ok:
                self.examples_done += size
                self._cells.setdefault(cell_id, [0, size])[0] += size

    def cell_done(self, cell_id: str, status: str) -> None:
        """`status`: completed, cached, skipped or failed."""
        with self._lock:
            if cell_id not in self._finished:
                self._finished.add(cell_id)
                self.outcomes[status] = self.outcomes.get(status, 0) + 1

    @property
    def cells_done(self) -> int:
        return len(self._finished)

    @property
    def percent(self) -> float:
        with self._lock:
            partial = sum(
                SCORED_SHARE * done / planned
                for cell, (done, planned) in self._cells.items()
                if cell not in self._finished and planned
            )
            return 100.0 * (len(self._finished) + partial) / max(self.cells_planned, 1)

    def rate(self, now: float | None = None) -> float | None:
        """Examples scored per second since the first shard was submitted."""
        if self._first_shard_at is None or not self.examples_done:
            return None
        elapsed = (now or time.monotonic()) - self._first_shard_at
        return self.examples_done / elapsed if elapsed > 0 else None

    def line(self, now: float | None = None) -> str:
        """`cells 3/24 (2 cached, 1 failed) | shards 10/40 | 12,288 examples | 850/s | ETA 0:42`"""
        now = now or time.monotonic()
        apart = [f"{self.outcomes[s]} {s}" for s in ("cached", "skipped", "failed") if self.outcomes.get(s)]
        parts = [
            f"cells {self.cells_done}/{self.cells_planned}" + (f" ({', '.join(apart)})" if apart else "")
        ]
        if self.shards_planned:
            parts.append(f"shards {self.shards_done}/{self.shards_planned}")
            parts.append(f"{self.examples_done:,}/{self.examples_planned:,} examples")
        rate = self.rate(now)
        if rate:
            parts.append(f"{rate:,.0f}/s")
            left = max(self.examples_planned - self.examples_done, 0) / rate
            if self.cells_done < self.cells_planned:
                parts.append(f"ETA {_clock(left)}" if left else "finishing")
        parts.append(f"{_clock(now - self.started)} elapsed")
        return f"{self.percent:3.0f}% | " + " | ".join(parts)


def _clock(seconds: float) -> str:
    s = int(round(seconds))
    h, rest = divmod(s, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"
