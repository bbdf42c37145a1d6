"""The reverse strand with a real model (the shipped tiny MLM, on the CPU), and the leaderboard
view of real scores: fast enough for the in-process tier (a few seconds).

A property, as caduceus's RCPS tests check equivariance: with two masks at 4095/4096 of an
8,192-bp window, the mirrored positions are the same pair, so scoring a sequence on the rc strand
must give exactly what scoring its reverse complement forward gives, with the positions swapped
and the bases complemented back. A wrong half or an un-flipped channel fails it.
"""

from __future__ import annotations

import numpy as np
import pytest

from plantcad_flows.benchmark.synthetic import ASSETS_MODELS, build_split
from plantcad_flows.config import ComputeConfig, ModelConfig, SamplingConfig, SplitConfig
from plantcad_flows.families import builtin_tasks
from plantcad_flows.results.leaderboard import build_views
from plantcad_flows.results.table import CellResult, rows
from plantcad_flows.sequences import RC_COLUMNS, reverse_complement, to_bytes

N = 12


@pytest.fixture(scope="module")
def loaded():
    from plantcad_flows.scoring.score import load_model

    model = ModelConfig(path=str(ASSETS_MODELS / "tiny-mlm"), type="mlm", context_length=512)
    return model, load_model(model, ComputeConfig())


def _split(tmp_path, task: str, split: str, sequences=None):
    frame = build_split(task, split, seed=0, n_examples=N)
    if sequences is not None:
        frame["sequence"] = sequences
    path = tmp_path / f"{task}-{split}-{sequences is not None}.parquet"
    frame.to_parquet(path)
    return SplitConfig(task=task, split=split, path=str(path)), frame


def _score(loaded, split, strand, context=512):
    from plantcad_flows.data.splits import prepare_split
    from plantcad_flows.scoring.score import score_frame

    model, lm = loaded
    model = model.model_copy(update={"context_length": context})
    frame = prepare_split(split, SamplingConfig())
    return score_frame(lm, model, split, frame, batch_size=8, strand=strand)


def test_rc_strand_equals_the_forward_score_of_the_reverse_complement(loaded, tmp_path):
    split, frame = _split(tmp_path, "donor_recovery", "test_maize")
    assert split.mask_positions == (4095, 4096)  # mirrored: the same pair
    flipped = reverse_complement(to_bytes(frame["sequence"].tolist()))
    rc_split, _ = _split(tmp_path, "donor_recovery", "test_maize", [bytes(r).decode() for r in flipped])
    rc = _score(loaded, split, "rc")
    fwd_of_rc = _score(loaded, rc_split, "fwd")
    a = np.stack(rc["probs"].to_numpy()).reshape(N, 2, 4)
    b = np.stack(fwd_of_rc["probs"].to_numpy()).reshape(N, 2, 4)
    np.testing.assert_allclose(a, b[:, ::-1, RC_COLUMNS], rtol=1e-5, atol=1e-6)
    assert not np.allclose(a, np.stack(_score(loaded, split, "fwd")["probs"].to_numpy()).reshape(N, 2, 4))
    # true bases stay the forward sequence's
    fwd_bases = [s[4095:4097].upper() for s in frame["sequence"]]
    assert rc["bases"].tolist() == fwd_bases


@pytest.mark.slow
def test_leaderboard_view_of_real_scores_on_two_strands_and_two_contexts(loaded, tmp_path):
    """Score a conservation and a motif split on fwd and rc at 256 and 512 bp, turn them into
    result rows, and check that the view selects per task the larger of the two values."""
    results = []
    for task, split_name in (("conservation_within_andropogoneae", "test"), ("tis_recovery", "test_maize")):
        split, _ = _split(tmp_path, task, split_name)
        for context in (256, 512):
            for strand in ("fwd", "rc"):
                predictions = _score(loaded, split, strand, context)
                results.append(
                    CellResult(
                        cell_id=f"tiny-mlm/{split.key}/ctx{context}/{strand}",
                        model="tiny-mlm",
                        task=task,
                        split=split_name,
                        strand=strand,
                        context_bp=context,
                        dataset="synthetic",
                        family=split.family.name,
                        status="completed",
                        metrics=split.family.metrics_of(predictions),
                    )
                )
    views = build_views(rows(results), builtin_tasks())
    assert [(v.model, v.context_bp) for v in views] == [("tiny-mlm", 256), ("tiny-mlm", 512)]
    for view in views:
        scored = {s.slot.entry.task_id: s for s in view.scores if not s.missing}
        assert set(scored) == {"cons_andropogoneae", "motif_maize_start_sites"}
        for s in scored.values():
            assert s.fwd is not None and s.rc is not None
            assert s.selected == max(s.fwd, s.rc)
        assert len(view.missing) == 18 and view.composite is None
