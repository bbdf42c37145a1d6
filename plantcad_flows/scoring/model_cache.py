"""A per-process model cache: a model loads once per Ray worker and serves every shard it gets.

Ray reuses worker processes across tasks, so a module-level cache in the worker outlives one shard
task and the next shard of the same model finds its model already on the device. The cache is a
small LRU because a worker may be handed shards of several models in turn, and each resident model
holds device memory: two fit on any GPU these models run on, and the least recently used one is
dropped (and the CUDA allocator's cache emptied) before a third loads.

The key must name everything that changes the loaded weights or their placement (model path,
revision, dtype, device); callers build it, this module only counts and evicts.
"""

from __future__ import annotations

import gc
import sys
import threading
from collections import Counter, OrderedDict
from collections.abc import Callable
from typing import Any, TypeVar

from plantcad_flows.errors import ValidationError

T = TypeVar("T")
DEFAULT_CAPACITY = 2


class ModelCache:
    """A bounded LRU of loaded models with a count of loads per key (for tests and logs)."""

    def __init__(self, capacity: int = DEFAULT_CAPACITY):
        if capacity < 1:
            raise ValidationError("model cache capacity", capacity, "must be >= 1")
        self.capacity = capacity
        self._items: OrderedDict[str, Any] = OrderedDict()
        self.loads: Counter[str] = Counter()
        # Threads share the process: two shard tasks of one model on one worker must not both load it.
        self._lock = threading.RLock()

    def get_or_load(self, key: str, loader: Callable[[], T]) -> T:
        """The cached object for `key`, calling `loader()` only if it is not resident."""
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
            while len(self._items) >= self.capacity:
                self._evict_oldest()
            value = loader()
            self._items[key] = value
            self.loads[key] += 1
            return value

    def keys(self) -> list[str]:
        """Resident keys, least recently used first."""
        with self._lock:
            return list(self._items)

    def clear(self) -> None:
        with self._lock:
            while self._items:
                self._evict_oldest()
            self.loads.clear()

    def _evict_oldest(self) -> None:
        self._items.popitem(last=False)
        # The evicted model's tensors are only freed once unreferenced; release the allocator's
        # cached blocks too, or the next model may not fit beside them.
        gc.collect()
        torch = sys.modules.get("torch")
        if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
            torch.cuda.empty_cache()


_PROCESS_CACHE = ModelCache()


def get_or_load(key: str, loader: Callable[[], T]) -> T:
    """Load through this process's cache; see `ModelCache.get_or_load`."""
    return _PROCESS_CACHE.get_or_load(key, loader)


def load_count(key: str | None = None) -> int:
    """How many times this process loaded `key` (or any model, if None)."""
    loads = _PROCESS_CACHE.loads
    return loads[key] if key is not None else sum(loads.values())
