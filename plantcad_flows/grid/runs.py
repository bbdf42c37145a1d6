"""A grid's runs as the Prefect API reports them, and what to do about each cell. No Prefect here.

The shell reads every flow run tagged `grid:<project>` and turns it into a `RunRecord`; this
module decides from those records alone:

* a cell's *latest* run is its most recently created run tagged `cell:<name>`;
* `decide`: a cell whose latest run is still on its way (Scheduled, Pending, Running, Paused,
  Cancelling) or Completed is skipped; one whose latest run Failed, Crashed or was Cancelled, or
  that never ran, is submitted, and so is every cell with `overwrite`;
* each submission carries attempt `n + 1` for a cell with `n` runs so far, and the idempotency
  key `{cell}-{attempt}`. A resubmission after a failure gets a new key, so the server never
  swallows it; two `submit`s racing on the same attempt get the same key, so the server creates
  one run, not two;
* `format_plan` and `format_status`: the tables `grid plan` and `grid status` print.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from plantcad_flows.grid.expand import GridCell
from plantcad_flows.tables import text_table

GRID_TAG, CELL_TAG = "grid:", "cell:"
ACTIVE = frozenset({"SCHEDULED", "PENDING", "RUNNING", "PAUSED", "CANCELLING"})
DONE = frozenset({"COMPLETED"})
RESUBMIT = frozenset({"FAILED", "CRASHED", "CANCELLED"})
FINAL = DONE | RESUBMIT
NOT_SUBMITTED = "-"


def grid_tag(project: str) -> str:
    return f"{GRID_TAG}{project}"


def cell_of(tags: Iterable[str]) -> str | None:
    """The cell a run belongs to, from its `cell:<name>` tag (None for the grid flow's own run)."""
    return next((t[len(CELL_TAG) :] for t in tags if t.startswith(CELL_TAG)), None)


@dataclass(frozen=True)
class RunRecord:
    """One flow run of a grid: a cell's run, or (cell None) the grid flow's own run."""

    id: str
    name: str
    cell: str | None
    state_type: str  # StateType value: COMPLETED, FAILED, RUNNING, ...
    state_name: str  # what the UI shows: Completed, Late, AwaitingRetry, ...
    created: dt.datetime | None = None
    start: dt.datetime | None = None
    end: dt.datetime | None = None
    worker: str | None = None  # where it ran: the process (host:pid) or the work queue
    message: str | None = None  # the state's message (the error of a failed run)
    idempotency_key: str | None = None

    @property
    def is_final(self) -> bool:
        return self.state_type in FINAL


def _created(r: RunRecord) -> tuple:
    return (r.created or dt.datetime.min.replace(tzinfo=dt.UTC), r.id)


def latest_by_cell(records: Iterable[RunRecord]) -> dict[str, RunRecord]:
    """Each cell's most recently created run."""
    latest: dict[str, RunRecord] = {}
    for r in records:
        if r.cell is not None and (r.cell not in latest or _created(r) > _created(latest[r.cell])):
            latest[r.cell] = r
    return latest


def attempts_by_cell(records: Iterable[RunRecord]) -> Counter:
    """How many runs each cell has had."""
    return Counter(r.cell for r in records if r.cell is not None)


@dataclass(frozen=True)
class Decision:
    """Whether to submit a cell now, as which attempt, and why."""

    cell: GridCell
    submit: bool
    attempt: int
    reason: str

    @property
    def idempotency_key(self) -> str:
        return f"{self.cell.name}-{self.attempt}"


def decide(
    cells: Sequence[GridCell], records: Iterable[RunRecord], overwrite: bool = False
) -> list[Decision]:
    """For each cell, submit or skip (see the module docstring)."""
    records = list(records)
    latest, attempts = latest_by_cell(records), attempts_by_cell(records)
    out = []
    for cell in cells:
        run = latest.get(cell.name)
        attempt = attempts[cell.name] + 1
        if run is None:
            out.append(Decision(cell, True, attempt, "never ran"))
        elif overwrite:
            out.append(Decision(cell, True, attempt, f"--overwrite (latest run {run.state_name})"))
        elif run.state_type in RESUBMIT:
            out.append(Decision(cell, True, attempt, f"latest run {run.state_name}"))
        else:
            out.append(Decision(cell, False, attempt - 1, f"latest run {run.state_name}"))
    return out


def summarize(decisions: Sequence[Decision]) -> str:
    """`12 cells: 3 to submit (1 never ran, 2 latest run Failed), 9 skipped (9 latest run Completed)`."""

    def counts(ds: list[Decision]) -> str:
        c = Counter(d.reason for d in ds)
        return ", ".join(f"{n} {reason}" for reason, n in sorted(c.items()))

    submit = [d for d in decisions if d.submit]
    skip = [d for d in decisions if not d.submit]
    parts = [f"{len(submit)} to submit" + (f" ({counts(submit)})" if submit else "")]
    parts.append(f"{len(skip)} skipped" + (f" ({counts(skip)})" if skip else ""))
    return f"{len(decisions)} cells: " + ", ".join(parts)


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return NOT_SUBMITTED
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m" if h else (f"{m}m{s:02d}s" if m else f"{s}s")


def duration(run: RunRecord, now: dt.datetime) -> float | None:
    if run.start is None:
        return None
    return ((run.end or now) - run.start).total_seconds()


def _state(cell: GridCell, latest: Mapping[str, RunRecord]) -> str:
    run = latest.get(cell.name)
    return run.state_name if run else NOT_SUBMITTED


def format_plan(cells: Sequence[GridCell], latest: Mapping[str, RunRecord] | None) -> str:
    """One line per cell: name, target, resources, current state (`?` without a server), command."""
    rows = []
    for c in cells:
        state = _state(c, latest) if latest is not None else "?"
        what = (
            c.command
            if c.kind == "command"
            else f"zero-shot-eval ({len((c.eval_config or {}).get('models', []))} models)"
        )
        rows.append((c.name, c.deployment, c.resources.summary(), state, what or ""))
    lines = text_table(("cell", "runs as", "resources", "state", "command"), rows)
    where = "state unknown: no Prefect server" if latest is None else "nothing submitted"
    lines.append(f"{len(cells)} cells ({where})")
    return "\n".join(lines)


def format_status(
    cells: Sequence[GridCell], records: Iterable[RunRecord], now: dt.datetime | None = None
) -> str:
    """A table of cells (state, attempt, start, duration, worker) and a summary line of counts."""
    records = list(records)
    now = now or dt.datetime.now(dt.UTC)
    latest, attempts = latest_by_cell(records), attempts_by_cell(records)
    rows = []
    for c in cells:
        run = latest.get(c.name)
        if run is None:
            rows.append((c.name, NOT_SUBMITTED, "0", NOT_SUBMITTED, NOT_SUBMITTED, NOT_SUBMITTED))
            continue
        start = run.start.strftime("%Y-%m-%d %H:%M:%S") if run.start else NOT_SUBMITTED
        rows.append(
            (
                c.name,
                run.state_name,
                str(attempts[c.name]),
                start,
                format_duration(duration(run, now)),
                run.worker or NOT_SUBMITTED,
            )
        )
    lines = text_table(("cell", "state", "attempt", "start", "duration", "worker"), rows)
    lines.append(status_summary(cells, latest))
    return "\n".join(lines)


def status_summary(cells: Sequence[GridCell], latest: Mapping[str, RunRecord]) -> str:
    """`12 cells: 10 Completed, 1 Failed, 1 Running` (`not submitted` for cells without a run)."""
    counts = Counter(latest[c.name].state_name if c.name in latest else "not submitted" for c in cells)
    return f"{len(cells)} cells: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))


def format_status_markdown(cells: Sequence[GridCell], records: Iterable[RunRecord]) -> str:
    """The grid's cells as a markdown table (the grid run's artifact in the UI)."""
    records = list(records)
    latest, attempts = latest_by_cell(records), attempts_by_cell(records)
    lines = [
        "| cell | model | dataset | hyper-parameters | state | attempt |",
        "|---|---|---|---|---|---|",
    ]
    for c in cells:
        run = latest.get(c.name)
        hp = ", ".join(f"{k}={v}" for k, v in sorted(c.hparams.items()))
        state = run.state_name if run else "not submitted"
        lines.append(f"| {c.name} | {c.model} | {c.dataset} | {hp} | {state} | {attempts[c.name]} |")
    return "\n".join([f"**{status_summary(cells, latest)}**", "", *lines])
