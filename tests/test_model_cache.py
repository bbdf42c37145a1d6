"""The per-process model cache: load once, bounded LRU, one load under concurrent callers."""

from __future__ import annotations

import threading
import time

import pytest
import torch

from plantcad_flows.errors import ValidationError
from plantcad_flows.scoring import model_cache as model_cache
from plantcad_flows.scoring.model_cache import ModelCache


def test_loads_once_and_reuses():
    cache = ModelCache(capacity=2)
    calls = []

    def loader():
        calls.append(1)
        return torch.nn.Linear(4, 4)

    first = cache.get_or_load("a", loader)
    for _ in range(5):
        assert cache.get_or_load("a", loader) is first
    assert len(calls) == 1 and cache.loads["a"] == 1


def test_lru_eviction_order():
    cache = ModelCache(capacity=2)
    cache.get_or_load("a", lambda: "A")
    cache.get_or_load("b", lambda: "B")
    cache.get_or_load("a", lambda: "A2")  # touch a: b becomes least recently used
    cache.get_or_load("c", lambda: "C")
    assert cache.keys() == ["a", "c"]
    assert cache.get_or_load("b", lambda: "B2") == "B2"  # reloaded after eviction
    assert cache.keys() == ["c", "b"]
    assert dict(cache.loads) == {"a": 1, "b": 2, "c": 1}


def test_evicted_model_is_freed():
    import weakref

    cache = ModelCache(capacity=1)
    ref = weakref.ref(cache.get_or_load("a", lambda: torch.nn.Linear(8, 8)))
    cache.get_or_load("b", lambda: torch.nn.Linear(8, 8))
    assert ref() is None


def test_concurrent_callers_load_once():
    cache = ModelCache()

    def slow():
        time.sleep(0.2)
        return object()

    got = []
    threads = [threading.Thread(target=lambda: got.append(cache.get_or_load("m", slow))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert cache.loads["m"] == 1 and len({id(x) for x in got}) == 1


def test_module_level_cache():
    key = "test_model_cache::module"
    before = model_cache.load_count()
    model_cache.get_or_load(key, lambda: 1)
    model_cache.get_or_load(key, lambda: 2)
    assert model_cache.load_count(key) == 1 and model_cache.load_count() == before + 1


def test_capacity_validated():
    with pytest.raises(ValidationError):
        ModelCache(capacity=0)
