"""The one retry helper of the house, on `tenacity`: `retrying(call, what, transient, waits)`.

Three callers, three notions of "may pass", one loop:
* hub calls (`with_retries`) retry with backoff on what may pass (HTTP 429, 5xx, a dropped or
  refused connection, a timeout) and fail at once on anything else (an unknown repo, revision or
  file, a gated repo, offline mode): retrying those only delays the message the user needs. The
  exception is looked at along its `__cause__` / `__context__` chain, because transformers and
  datasets wrap the hub's errors in their own (`OSError`, `ConnectionError`);
* a `ray://` join (`cluster/ray_client.py`) retries Ray Client's initialisation failures within a
  time budget;
* Prefect tasks (`tasks/policy.py`) take their delays from `task_retry_waits` (Prefect runs that
  loop): 2, 4 and 8 s, or the seconds listed in `PLANTCAD_TASK_RETRY_WAITS`.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator, Sequence
from typing import TypeVar

import tenacity

from plantcad_flows.errors import ValidationError

log = logging.getLogger(__name__)
T = TypeVar("T")


def backoff(first: float, cap: float, count: int) -> tuple[float, ...]:
    """`count` waits doubling from `first`, none longer than `cap`: backoff(1, 8, 4) = 1, 2, 4, 8."""
    return tuple(min(first * 2**i, cap) for i in range(count))


BACKOFF_S = backoff(1.0, 8.0, 4)  # hub waits between attempts: five attempts in all, ~15 s
TASK_RETRY_WAITS_ENV = "PLANTCAD_TASK_RETRY_WAITS"
TASK_RETRY_WAITS_S = backoff(2.0, 8.0, 3)  # a step that fails transiently runs 4 times in all


def task_retry_waits() -> tuple[float, ...]:
    """The seconds a failed step waits before each new attempt: `PLANTCAD_TASK_RETRY_WAITS`
    (comma-separated, e.g. "5,30,120" for an object store that recovers slowly), else 2, 4, 8.
    One attempt more than there are waits.

    Raises:
        ValidationError: naming the variable, when it is not a list of 1 to 10 numbers from 0
        to 3600.
    """

    raw = os.environ.get(TASK_RETRY_WAITS_ENV, "").strip()
    if not raw:
        return TASK_RETRY_WAITS_S
    try:
        waits = tuple(float(part) for part in raw.split(","))
    except ValueError:
        waits = ()
    if not 1 <= len(waits) <= 10 or not all(0 <= w <= 3600 for w in waits):
        raise ValidationError(
            TASK_RETRY_WAITS_ENV, raw, "expected 1 to 10 comma-separated seconds from 0 to 3600"
        )
    return waits


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        yield cur
        cur = cur.__cause__ or cur.__context__


def _status(exc: BaseException) -> int | None:
    response = getattr(exc, "response", None)
    status = getattr(response, "status_code", None)
    return status if isinstance(status, int) else None


def _is_transport_error(exc: BaseException) -> bool:
    """A request that never got an answer: refused, reset, timed out (the hub's HTTP client
    names these TransportError; the standard library ConnectionError / TimeoutError)."""
    return isinstance(exc, ConnectionError | TimeoutError) or any(
        cls.__name__ == "TransportError" for cls in type(exc).__mro__
    )


def is_transient(exc: BaseException) -> bool:
    """Whether a hub failure is worth another attempt."""
    from huggingface_hub.errors import OfflineModeIsEnabled

    for e in _chain(exc):
        if isinstance(e, OfflineModeIsEnabled):
            return False  # the user asked for no network: waiting cannot change that
        status = _status(e)
        if status is not None:
            return status == 429 or 500 <= status < 600
        if _is_transport_error(e):
            return True
    return False


def _sleep(seconds: float) -> None:
    time.sleep(seconds)


def retrying(
    call: Callable[[], T],
    what: str,
    transient: Callable[[BaseException], bool],
    waits: Sequence[float],
    *,
    budget_s: float | None = None,
) -> T:
    """`call()`, tried again after each of `waits` while it fails with a `transient` error.

    Args:
        call: the attempt.
        what: what is being attempted, for the log.
        transient: whether a failure may pass (anything else is raised at once).
        waits: the seconds between attempts (len(waits) + 1 attempts at most).
        budget_s: also stop before a wait would end later than this after the first attempt.

    Raises:
        The last exception, when it is not transient or the attempts (or budget) are spent.
    """
    stop = tenacity.stop_after_attempt(len(waits) + 1)
    if budget_s is not None:
        stop = stop | tenacity.stop_before_delay(budget_s)

    def before_sleep(state: tenacity.RetryCallState) -> None:
        e = state.outcome.exception()
        log.warning(
            "%s: attempt %d failed (%s: %s); retrying in %.1f s",
            what,
            state.attempt_number,
            type(e).__name__,
            str(e).splitlines()[0] if str(e) else "",
            state.upcoming_sleep,
        )

    return tenacity.Retrying(
        stop=stop,
        wait=lambda state: waits[min(state.attempt_number, len(waits)) - 1],
        retry=tenacity.retry_if_exception(transient),
        before_sleep=before_sleep,
        sleep=lambda seconds: _sleep(seconds),
        reraise=True,
    )(call)


def with_retries(call: Callable[[], T], what: str) -> T:
    """A hub call, retried after 1, 2, 4 and 8 s while it fails transiently (`is_transient`)."""
    return retrying(call, what, is_transient, BACKOFF_S)
