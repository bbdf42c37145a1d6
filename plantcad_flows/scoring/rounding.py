"""How far a score may move when only the batching changes, and why it moves at all.

A window's score is a function of the window alone: windows have equal lengths, so no padding
and no attention mask enter a batch, and rows never mix. Its *floating-point value* still
depends on the batch it rode in. The model's matrix products run as GEMMs whose row count is
`batch x length`; the CPU BLAS (and cuBLAS) picks its blocking and micro-kernel by problem size,
so the same row's dot products are summed in a different order when the batch holds 4 windows
instead of 16. In fp32 that changes the last bits of a logit (measured here on the tests' tiny
BERT: up to 8e-8 between batch 1 and batches of 4 to 40; an LLR of -1.1097e-4 against
-1.1095e-4 for one variant between the S3 and the local run of the same set).

So, for a given cell:
* the same batching gives bit-identical scores, run after run (nothing is sampled at scoring
  time, and resumed shards keep their batch size);
* another batch size, shard count or batch order moves a score by float rounding only, bounded
  by `SCORE_RTOL` and `SCORE_ATOL` (`|a - b| <= SCORE_ATOL + SCORE_RTOL * |b|`) for fp32 scoring
  (bf16/fp16 on a GPU round far more coarsely; no bound is claimed for them here).

Tests that compare scores across batchings use these constants, never exact equality.
"""

from __future__ import annotations

SCORE_RTOL = 1e-5
SCORE_ATOL = 1e-6
