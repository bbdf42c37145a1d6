"""A lost Prefect server ends the run: the CLI's watchdog on the API it runs against.

When the server a run reports to dies mid-run (killed, out of memory, its host gone), Prefect's
client keeps retrying its event socket and API calls for minutes, and the run neither finishes
nor fails. The watchdog asks the API's `/health` every few seconds from a daemon thread; once it
has not answered for `lost_after` seconds (`PLANTCAD_API_LOST_AFTER`, 60 by default), it prints
one line naming the server and ends the process with `EXIT_API_LOST` (3: not bad input, which is
2; not failed cells, which is 1).

It ends the process on the spot (`os._exit`), as a SIGKILL would: nothing can be reported to a
dead server, and what the run started (a local Ray instance) is taken down by the reaper
(`cluster/reaper.py`). That is safe because every step writes atomically and marks itself
complete last: the next run of the same command scores only what is missing.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable

from plantcad_flows.errors import ValidationError
from plantcad_flows.services.prefect_server import api_healthy

EXIT_API_LOST = 3
LOST_AFTER_ENV = "PLANTCAD_API_LOST_AFTER"
DEFAULT_LOST_AFTER_S = 60.0


def lost_after_s() -> float:
    """Seconds without an answer after which the server counts as lost (from the environment).

    Raises:
        ValidationError: naming the variable, when it is not a positive number.
    """
    raw = os.environ.get(LOST_AFTER_ENV)
    if not raw:
        return DEFAULT_LOST_AFTER_S
    try:
        value = float(raw)
    except ValueError:
        value = 0.0
    if not value > 0:
        raise ValidationError(LOST_AFTER_ENV, raw, "expected a positive number of seconds")
    return value


def lost_message(ui_url: str, seconds: float) -> str:
    return (
        f"the Prefect server at {ui_url} has not answered for {seconds:.0f}s: the run ends "
        f"(exit {EXIT_API_LOST}); completed steps are kept, run the same command again to resume"
    )


def _exit_lost(ui_url: str, seconds: float) -> None:
    print(lost_message(ui_url, seconds), file=sys.stderr, flush=True)
    sys.stdout.flush()
    os._exit(EXIT_API_LOST)


class ApiWatchdog:
    """Polls `api_url`'s health; calls `on_lost` once it has failed for `lost_after` seconds.

    Args:
        api_url: the Prefect API (`.../api`).
        lost_after: seconds without a healthy answer that mean the server is gone.
        on_lost: called from the watchdog thread with (UI URL, seconds silent); by default it
            prints the line and ends the process with `EXIT_API_LOST`.
    """

    def __init__(
        self,
        api_url: str,
        lost_after: float | None = None,
        on_lost: Callable[[str, float], None] = _exit_lost,
    ):
        self.api_url = api_url
        self.lost_after = lost_after_s() if lost_after is None else lost_after
        self.poll = min(2.0, self.lost_after / 4)
        self.on_lost = on_lost
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="plantcad-api-watchdog", daemon=True)

    def start(self) -> ApiWatchdog:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _watch(self) -> None:
        last_ok = time.monotonic()
        while not self._stop.wait(self.poll):
            if api_healthy(self.api_url, timeout=min(5.0, self.lost_after / 2)):
                last_ok = time.monotonic()
                continue
            silent = time.monotonic() - last_ok
            if silent >= self.lost_after and not self._stop.is_set():
                self.on_lost(self.api_url.removesuffix("/api"), silent)
                return
