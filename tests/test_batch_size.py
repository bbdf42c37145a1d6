"""`batch_size: auto`: the doubling/backoff probe and its per-node memo, with a fake device."""

from __future__ import annotations

import json
import multiprocessing as mp

import pytest

from plantcad_flows.errors import ValidationError
from plantcad_flows.scoring.batch_size import (
    BatchSizeMemo,
    auto_batch_size,
    find_max_batch_size,
    is_out_of_memory,
    memo_key,
)


class FakeDevice:
    """A forward pass that runs out of memory above `limit`, like CUDA does."""

    def __init__(
        self, limit: int, exc=lambda: RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
    ):
        self.limit, self.exc, self.tried, self.freed = limit, exc, [], 0

    def __call__(self, size: int) -> None:
        self.tried.append(size)
        if size > self.limit:
            raise self.exc()

    def free(self) -> None:
        self.freed += 1


@pytest.mark.parametrize("limit", [1, 2, 3, 7, 8, 9, 100, 1000, 4095])
def test_finds_exact_limit(limit):
    dev = FakeDevice(limit)
    assert find_max_batch_size(dev, start=8, max=4096, on_oom=dev.free) == limit
    assert dev.freed == sum(s > limit for s in dev.tried)
    assert len(dev.tried) <= 2 * 12 + 2  # log-many forward passes, not a linear scan


def test_hand_computed_sequence():
    dev = FakeDevice(100)
    find_max_batch_size(dev, start=8, max=4096, on_oom=dev.free)
    assert dev.tried == [8, 16, 32, 64, 128, 96, 112, 104, 100, 102, 101]


def test_ceiling_and_start_above_max():
    dev = FakeDevice(10**6)
    assert find_max_batch_size(dev, start=8, max=100, on_oom=dev.free) == 100
    assert dev.tried[-1] == 100 and max(dev.tried) == 100
    assert find_max_batch_size(FakeDevice(10**6), start=500, max=64) == 64


def test_torch_oom_and_other_errors():
    import torch  # here only: spawned children of this module must not pay for importing torch

    dev = FakeDevice(5, exc=lambda: torch.cuda.OutOfMemoryError("CUDA out of memory."))
    assert find_max_batch_size(dev, start=4, on_oom=dev.free) == 5

    def broken(size):
        raise RuntimeError("shape mismatch")

    with pytest.raises(RuntimeError, match="shape mismatch"):
        find_max_batch_size(broken)
    assert is_out_of_memory(torch.cuda.OutOfMemoryError("x"))
    assert is_out_of_memory(RuntimeError("CUDA error: out of memory"))
    assert not is_out_of_memory(ValueError("out of memory"))


def test_nothing_fits():
    with pytest.raises(ValidationError, match="batch of 1"):
        find_max_batch_size(FakeDevice(0), start=8, on_oom=lambda: None)


def test_memo_roundtrip_and_corrupt(tmp_path):
    path = tmp_path / "sub" / "bs.json"
    memo = BatchSizeMemo(path)
    assert memo.get("k") is None
    memo.put("k", 48)
    memo.put("j", 12)
    assert BatchSizeMemo(path).get("k") == 48
    assert json.loads(path.read_text()) == {"j": 12, "k": 48}
    path.write_text("{not json")
    assert memo.get("k") is None


def test_auto_batch_size_probes_once_per_key(tmp_path):
    path = tmp_path / "bs.json"
    dev = FakeDevice(40)
    args = dict(model_identity="m@rev", device_name="NVIDIA H100 80GB HBM3", memo_path=path, on_oom=dev.free)
    assert auto_batch_size(dev, context_length=512, **args) == (40, False)
    n = len(dev.tried)
    assert auto_batch_size(dev, context_length=512, **args) == (40, True)
    assert len(dev.tried) == n  # memo hit: no forward pass
    auto_batch_size(FakeDevice(20), context_length=8192, **{**args, "on_oom": lambda: None})
    data = json.loads(path.read_text())
    assert data == {
        memo_key("m@rev", 512, "NVIDIA H100 80GB HBM3"): 40,
        memo_key("m@rev", 8192, "NVIDIA H100 80GB HBM3"): 20,
    }


def _probe_in_process(path, out):
    calls = []

    def try_batch(size):
        calls.append(size)
        if size > 24:
            raise RuntimeError("CUDA out of memory")

    size, hit = auto_batch_size(try_batch, "m", 512, "dev", memo_path=path, on_oom=lambda: None)
    out.put((size, hit, len(calls)))


def test_concurrent_processes_probe_once(tmp_path):
    ctx = mp.get_context("spawn")  # fork is unsafe once Ray or Prefect threads exist
    out = ctx.Queue()
    procs = [ctx.Process(target=_probe_in_process, args=(str(tmp_path / "bs.json"), out)) for _ in range(3)]
    for p in procs:
        p.start()
    results = [out.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(30)
    assert all(size == 24 for size, _, _ in results)
    assert sorted(hit for _, hit, _ in results) == [False, True, True]
