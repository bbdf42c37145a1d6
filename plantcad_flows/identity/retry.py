"""Calls to the Hugging Face hub retry with backoff on what may pass (HTTP 429, 5xx, a dropped
or refused connection, a timeout) and fail at once on anything else (an unknown repo, revision
or file, a gated repo, offline mode): retrying those only delays the message the user needs.

The exception is looked at along its `__cause__` / `__context__` chain, because transformers and
datasets wrap the hub's errors in their own (`OSError`, `ConnectionError`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from typing import TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")

BACKOFF_S = (1.0, 2.0, 4.0, 8.0)  # waits between attempts: five attempts in all, ~15 s


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


def with_retries(call: Callable[[], T], what: str) -> T:
    """`call()`, retried after 1, 2, 4 and 8 s while it fails transiently.

    Args:
        call: one hub request (or a load that makes some).
        what: what is being fetched, for the log.

    Raises:
        The last exception, when it is not transient or the attempts are spent.
    """
    for attempt, wait in enumerate((*BACKOFF_S, None), start=1):
        try:
            return call()
        except Exception as e:
            if wait is None or not is_transient(e):
                raise
            log.warning(
                "%s: attempt %d failed (%s: %s); retrying in %.0f s", what, attempt, type(e).__name__, e, wait
            )
            _sleep(wait)
    raise AssertionError("unreachable")
