"""`batch_size: auto`: probe for the largest batch that fits in device memory, and remember it.

The probe doubles the batch until a forward pass runs out of memory (or a ceiling is reached), then
bisects between the last size that fitted and the first that did not. A probe costs several
forward passes at the largest sizes, so the answer is memoised in a small JSON file keyed by what
decides memory use: the model's identity, the context length and the device's name. Each worker
process of a node reads the same file, under a file lock, so the probe runs once per node and model.

Everything that touches a device is injected (`try_batch`, `is_oom`, `on_oom`), so the search is
tested on CPU with a fake forward pass that "runs out of memory" above a threshold.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from pathlib import Path

from filelock import FileLock

from plantcad_flows.errors import ValidationError

DEFAULT_START = 8
DEFAULT_MAX = 4096
DEFAULT_MEMO = Path("~/.cache/plantcad-flows/batch_sizes.json")


def is_out_of_memory(exc: BaseException) -> bool:
    """True for CUDA (and other backends') out-of-memory errors, which a smaller batch can avoid."""
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(exc, torch.cuda.OutOfMemoryError):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def release_device_memory() -> None:
    """Give back the blocks a failed batch left in the CUDA allocator's cache."""
    import gc

    gc.collect()
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.empty_cache()


def find_max_batch_size(
    try_batch: Callable[[int], None],
    start: int = DEFAULT_START,
    max: int = DEFAULT_MAX,  # noqa: A002 - mirrors the config vocabulary
    is_oom: Callable[[BaseException], bool] = is_out_of_memory,
    on_oom: Callable[[], None] = release_device_memory,
) -> int:
    """The largest batch size in [1, max] for which `try_batch(size)` does not run out of memory.

    Args:
        try_batch: runs one forward pass at the given batch size; raises on out-of-memory.
        start: first size tried; doubled while it fits, halved while it does not.
        max: ceiling; returned without trying larger sizes if it fits.
        is_oom: which exceptions mean "too big"; any other exception propagates.
        on_oom: called after each out-of-memory, to free what the failed attempt held.

    Raises:
        ValidationError: bad `start`/`max`, or even a batch of 1 does not fit.
    """
    if start < 1 or max < 1:
        raise ValidationError("batch size probe", (start, max), "start and max must be >= 1")
    start = min(start, max)

    def fits(size: int) -> bool:
        try:
            try_batch(size)
        except Exception as exc:
            if not is_oom(exc):
                raise
            on_oom()
            return False
        return True

    if fits(start):
        good, bad = start, None
        while bad is None and good < max:
            size = min(good * 2, max)
            if fits(size):
                good = size
            else:
                bad = size
        if bad is None:
            return good
    else:
        bad, good = start, 0
        while good == 0 and bad > 1:
            size = bad // 2
            if fits(size):
                good = size
            else:
                bad = size
        if good == 0:
            raise ValidationError("compute.batch_size", "auto", "a batch of 1 does not fit in device memory")
    # Invariant: `good` fits, `bad` does not; bisect the gap.
    while bad - good > 1:
        mid = (good + bad) // 2
        if fits(mid):
            good = mid
        else:
            bad = mid
    return good


def memo_key(model_identity: str, context_length: int, device_name: str) -> str:
    return f"{model_identity}|ctx={context_length}|{device_name}"


class BatchSizeMemo:
    """Remembered batch sizes in a JSON file; safe for concurrent processes on one node."""

    def __init__(self, path: str | os.PathLike | None = None):
        self.path = Path(path or DEFAULT_MEMO).expanduser()
        self._lock = FileLock(str(self.path) + ".lock")

    def _read(self) -> dict[str, int]:
        try:
            data = json.loads(self.path.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            # A truncated or hand-mangled memo only costs a new probe.
            return {}
        return {k: int(v) for k, v in data.items()} if isinstance(data, dict) else {}

    def get(self, key: str) -> int | None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._lock:
            return self._read().get(key)

    def put(self, key: str, size: int) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._lock:
            data = self._read()
            data[key] = int(size)
            tmp = self.path.with_suffix(f".tmp{os.getpid()}")
            tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
            os.replace(tmp, self.path)


def auto_batch_size(
    try_batch: Callable[[int], None],
    model_identity: str,
    context_length: int,
    device_name: str,
    memo_path: str | os.PathLike | None = None,
    **probe: object,
) -> tuple[int, bool]:
    """The remembered batch size for this model, context and device, probing if there is none.

    The probe runs while holding the memo's lock, so the other workers of the node wait for its
    answer instead of probing the same GPU model at the same time.

    Returns:
        (batch size, True if it came from the memo).
    """
    memo = BatchSizeMemo(memo_path)
    key = memo_key(model_identity, context_length, device_name)
    memo.path.parent.mkdir(parents=True, exist_ok=True)
    with memo._lock:  # re-entrant: get/put below take it again
        known = memo.get(key)
        if known is not None:
            return known, True
        size = find_max_batch_size(try_batch, **probe)  # type: ignore[arg-type]
        memo.put(key, size)
    return size, False
