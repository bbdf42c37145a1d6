"""The synthetic benchmark: determinism, public schema, planted motifs at the masks, SV geometry."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from plantcad_flows.benchmark.synthetic import (
    MARKER,
    build_split,
    demo_config,
    ensure_benchmark,
    generate_benchmark,
    write_demo_config,
)
from plantcad_flows.config import SamplingConfig, SplitConfig, load_config
from plantcad_flows.data.splits import prepare_split
from plantcad_flows.families import all_task_splits, builtin_tasks, get_family
from plantcad_flows.families import genome as genome

TASKS = builtin_tasks()
MOTIF = get_family("motif_recovery")
STRUCTURAL_VARIANT = get_family("structural_variant_effect")

N = 10
L = 8192
REPO = Path(__file__).resolve().parents[1]

SV_TASK = builtin_tasks()["structural_variant_effect_prediction"]
SV_FLANKING = get_family(SV_TASK.family).settings_of(SV_TASK).flanking


@pytest.fixture(scope="module")
def bench(tmp_path_factory) -> dict:
    return generate_benchmark(tmp_path_factory.mktemp("syn"), seed=0, n_examples=N)


def test_writes_every_split_at_its_public_path(bench):
    root = next(iter(bench.values())).parents[1]
    assert sorted(bench) == sorted(all_task_splits())
    for (task, split), path in bench.items():
        assert path == root / task / f"{split}.parquet" and path.is_file()


def test_same_seed_is_byte_identical_and_other_seed_differs(bench, tmp_path):
    again = generate_benchmark(tmp_path / "again", seed=0, n_examples=N)
    other = generate_benchmark(tmp_path / "other", seed=1, n_examples=N)
    for key, path in bench.items():
        assert path.read_bytes() == again[key].read_bytes(), key
        assert path.read_bytes() != other[key].read_bytes(), key


def test_masked_splits_follow_the_public_schema(bench):
    for (task, _split), path in bench.items():
        spec = TASKS[task]
        frame = pd.read_parquet(path)
        assert len(frame) == N
        if spec.family_object == STRUCTURAL_VARIANT:
            assert list(frame.columns) == ["RefSeq", "MutSeq", "left", "right", "label"]
            continue
        assert list(frame.columns) == ["sequence", "label"]
        assert frame["label"].dtype == np.int64
        assert (frame["sequence"].str.len() == L).all()
        assert frame["sequence"].str.fullmatch("[ACGTNacgtn]+").all()
        if spec.family_object == MOTIF:
            assert (frame["label"] == 1).all()
        else:
            assert set(frame["label"]) == {0, 1}


def test_some_sequences_are_soft_masked():
    frame = build_split("donor_recovery", "test_maize", n_examples=40)
    assert frame["sequence"].str.contains("[acgt]").any()
    assert frame["sequence"].str.contains("[ACGT]").all()


def _motifs_at_masks(frame: pd.DataFrame, task: str) -> list[str]:
    pos = list(TASKS[task].family_object.settings_of(TASKS[task]).mask_positions)
    return ["".join(s[p] for p in pos).upper() for s in frame["sequence"]]


CANONICAL = {"acceptor": {"AG"}, "donor": {"GT"}, "tis": {"ATG"}, "tts": {"TAA", "TGA", "TAG"}}


@pytest.mark.parametrize("kind", sorted(CANONICAL))
def test_motif_and_core_splits_carry_their_motif_at_the_default_masks(kind):
    motifs = _motifs_at_masks(
        build_split(f"{kind}_recovery", "test_tomato", n_examples=60), f"{kind}_recovery"
    )
    clean = [m for m in motifs if "N" not in m]
    assert len(clean) >= 55 and all(m in CANONICAL[kind] for m in clean)
    task = f"{kind}_core_noncore_classification"
    frame = build_split(task, "test_maize", n_examples=40)
    for motif, label in zip(_motifs_at_masks(frame, task), frame["label"]):
        assert (motif in CANONICAL[kind]) == bool(label), (motif, label)


def test_acceptor_context_is_pyrimidine_rich_upstream():
    frame = build_split("acceptor_recovery", "test_maize", n_examples=50)
    up = "".join(s[4095 - 12 : 4095] for s in frame["sequence"]).upper()
    assert (up.count("C") + up.count("T")) / len(up) > 0.8


def test_conserved_centres_sit_in_library_elements_and_neutral_ones_do_not():
    frame = build_split("conservation_within_andropogoneae", "test", n_examples=60)
    library = [e.tobytes().decode() for e in genome.element_library()[: genome.NUM_ELEMENTS // 2]]

    def in_library(seq: str) -> bool:
        window = seq[4095 - 3 : 4095 + 4].upper()  # 7-mer around the centre, offsets 4..len-5
        return any(window in e for e in library)

    hits = np.array([in_library(s) for s in frame["sequence"]])
    labels = frame["label"].to_numpy()
    assert hits[labels == 1].mean() > 0.8
    assert hits[labels == 0].mean() < 0.1


def test_sv_geometry_holds_on_every_example(bench):
    frame = pd.read_parquet(bench[("structural_variant_effect_prediction", "test")])
    f, half = SV_FLANKING, L // 2
    trim = (L - 512) // 2
    for ref, mut, left, right in frame[["RefSeq", "MutSeq", "left", "right"]].itertuples(index=False):
        ref, mut = ref.upper(), mut.upper()
        assert len(ref) == len(mut) == L
        assert 1 <= left <= right <= L and 10 <= right - left + 1 <= 150
        # MutSeq's central 2F bases are the F bases left and right of RefSeq[left..right] (1-based).
        assert mut[half - f : half] == ref[left - 1 - f : left - 1]
        assert mut[half : half + f] == ref[right : right + f]
        # ...and more generally MutSeq is RefSeq without the segment, around the junction.
        assert mut[half - 40 : half] == ref[left - 41 : left - 1]
        assert mut[half : half + 40] == ref[right : right + 40]
        # The RefSeq flanks stay inside a 512-bp centre crop.
        assert left - 1 - f - trim >= 0 and right + f - trim <= 512


def test_sv_breaking_variants_cut_a_library_element_and_neutral_ones_do_not():
    frame = build_split("structural_variant_effect_prediction", "test", n_examples=60)
    library = [e.tobytes().decode() for e in genome.element_library()]
    # Breaking variants leave >= F+3 bases of an element instance left of the junction.
    k = SV_FLANKING + 3
    hits = np.array(
        [
            any(ref[left - 1 - k : left - 1].upper() in e for e in library)
            for ref, left in frame[["RefSeq", "left"]].itertuples(index=False)
        ]
    )
    labels = frame["label"].to_numpy()
    assert hits[labels == 1].mean() > 0.6  # 2% per-base mutation leaves ~85% exact 8-mers
    assert hits[labels == 0].mean() < 0.1


def test_generated_splits_pass_the_data_loader(bench):
    for (task, split), path in bench.items():
        frame = prepare_split(SplitConfig(task=task, split=split, path=str(path)), SamplingConfig())
        assert len(frame) == N


def test_ensure_benchmark_generates_once_and_redoes_an_incomplete_dir(tmp_path):
    paths = ensure_benchmark(tmp_path, seed=3, n_examples=4)
    marker = tmp_path / MARKER
    assert marker.is_file()
    stamp = {k: p.stat().st_mtime_ns for k, p in paths.items()}
    ensure_benchmark(tmp_path, seed=3, n_examples=4)
    assert {k: p.stat().st_mtime_ns for k, p in paths.items()} == stamp
    victim = paths[("tts_recovery", "test_tomato")]
    victim.unlink()
    ensure_benchmark(tmp_path, seed=3, n_examples=4)
    assert victim.is_file()


def test_demo_config_loads_and_the_committed_one_is_current(tmp_path):
    path = write_demo_config(tmp_path / "demo.yaml", tmp_path / "data", str(tmp_path / "out"))
    cfg = load_config(path)
    assert len(cfg.splits) == 20 and [m.type for m in cfg.models] == ["mlm", "clm", "mlm"]
    assert all(m.context_length == 512 for m in cfg.models)
    assert all(Path(s.path).parent.parent == tmp_path / "data" for s in cfg.splits)
    committed = REPO / "configs" / "demo.yaml"
    # its paths are relative to configs/, as every path in a config file is
    fresh = write_demo_config(
        tmp_path / "c.yaml", "../data/synthetic", "../outputs/demo", "../plantcad_flows/assets/models"
    )
    assert committed.read_text() == fresh.read_text()
    assert demo_config("d", "p")["executor"] == {"prefix": "p"}
    assert all(Path(m.path).is_dir() for m in load_config(committed).models)
