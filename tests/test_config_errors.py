"""Registry defaults and every bad input of the issue's Errors list: one line, field and value."""

from __future__ import annotations

import pandas as pd
import pytest
from pydantic import ValidationError as PydanticValidationError

from plantcad_flows.config import CheckpointsConfig, EvalConfig, ModelConfig, SamplingConfig, SplitConfig
from plantcad_flows.data.splits import prepare_split
from plantcad_flows.errors import UnknownNameError, ValidationError
from plantcad_flows.families import all_task_splits, builtin_tasks, get_family
from plantcad_flows.sequences import crop_plan

TASKS = builtin_tasks()
CONSERVATION = get_family("evolutionary_conservation")
MOTIF = get_family("motif_recovery")
CORE_NONCORE = get_family("core_noncore_classification")
STRUCTURAL_VARIANT = get_family("structural_variant_effect")


def test_registry_defaults():
    assert len(TASKS) == 12 and len(all_task_splits()) == 3 + 8 * 2 + 1
    fam = {name: t.family_object for name, t in TASKS.items()}
    assert sum(f == CONSERVATION for f in fam.values()) == 3
    assert sum(f == MOTIF for f in fam.values()) == 4
    assert sum(f == CORE_NONCORE for f in fam.values()) == 4
    assert fam["structural_variant_effect_prediction"] == STRUCTURAL_VARIANT

    def masks(task):
        return tuple(TASKS[task].family_object.settings_of(TASKS[task]).mask_positions)

    assert masks("conservation_within_poaceae_tis") == (4095,)
    assert masks("donor_recovery") == (4095, 4096)
    assert masks("tts_core_noncore_classification") == (4094, 4095, 4096)
    assert TASKS["acceptor_recovery"].splits == ("test_maize", "test_tomato")
    assert TASKS["structural_variant_effect_prediction"].splits == ("test",)
    assert SplitConfig(task="tis_recovery", split="test_maize").mask_positions == (4094, 4095, 4096)


def one_line(err: Exception, *needles: str) -> None:
    msg = str(err)
    assert "\n" not in msg, msg
    for n in needles:
        assert n in msg, (n, msg)


def test_unknown_task_suggests_closest():
    with pytest.raises((UnknownNameError, PydanticValidationError)) as e:
        SplitConfig(task="tis_recovry", split="test_maize")
    # pydantic wraps errors raised in validators; our one-line message is one of its lines
    assert any(
        "splits[].task='tis_recovry'" in line and "did you mean 'tis_recovery'" in line
        for line in str(e.value).splitlines()
    )


@pytest.mark.parametrize("masks,problem", [((4000,), "not centred"), ((9000,), "out of range")])
def test_bad_masks(masks, problem):
    with pytest.raises(PydanticValidationError) as e:
        SplitConfig(
            task="conservation_within_andropogoneae", split="test", overrides={"mask_token_indexes": masks}
        )
    assert f"mask_token_indexes={list(masks)!r}" in str(e.value) and problem in str(e.value)


def test_odd_crop_lengths():
    with pytest.raises(ValidationError) as e:
        crop_plan(8192, 513)
    one_line(e.value, "models[].context_length=513", "even")
    with pytest.raises(PydanticValidationError, match=r"seq_length=8191: must be even"):
        SplitConfig(task="tis_recovery", split="test_maize", seq_length=8191)


def split(task="conservation_within_andropogoneae", sp="test", **kw):
    return SplitConfig(task=task, split=sp, path="x", seq_length=8, **kw)


def test_mixed_lengths():
    raw = pd.DataFrame({"sequence": ["ACGTACGT", "ACGTACG"], "label": [0, 1]})
    with pytest.raises(ValidationError) as e:
        prepare_split(split(), SamplingConfig(), raw=raw)
    one_line(e.value, "splits[conservation_within_andropogoneae/test].sequence=7", "mixed sequence lengths")


def test_length_differs_from_seq_length():
    raw = pd.DataFrame({"sequence": ["ACGTAC"] * 2, "label": [0, 1]})
    with pytest.raises(ValidationError) as e:
        prepare_split(split(), SamplingConfig(), raw=raw)
    one_line(e.value, "seq_length=8", "6-bp")


@pytest.mark.parametrize(
    "columns,field,value",
    [
        ({"seq": ["ACGTACGT"], "label": [0]}, "seq_column", "'sequence'"),
        ({"sequence": ["ACGTACGT"]}, "label_column", "'label'"),
    ],
)
def test_missing_columns(columns, field, value):
    with pytest.raises(ValidationError) as e:
        prepare_split(split(), SamplingConfig(), raw=pd.DataFrame(columns))
    one_line(e.value, field, value, "column missing")


def test_missing_sv_columns():
    raw = pd.DataFrame({"RefSeq": ["ACGTACGT"], "label": [0]})
    with pytest.raises(ValidationError) as e:
        prepare_split(
            split("structural_variant_effect_prediction", overrides={"flanking": 2}),
            SamplingConfig(),
            raw=raw,
        )
    one_line(e.value, "'MutSeq'", "column missing")


def test_empty_after_sampling():
    raw = pd.DataFrame({"sequence": ["ACGTACGT"] * 3, "label": [0, 1, 0]})
    with pytest.raises(ValidationError) as e:
        prepare_split(split(), SamplingConfig(rate=0.2), raw=raw)
    one_line(e.value, "sampling=", "'rate': 0.2", "leaves 0 of 3 examples")


@pytest.mark.parametrize(
    "kw,needle",
    [
        ({"type": "rnn"}, "models[].type='rnn'"),
        ({"type": "clm", "motif_inference_mode": "both"}, "models[].motif_inference_mode='both'"),
        ({"type": "mlm", "motif_inference_mode": "rc_only"}, "only fwd_only is supported"),
    ],
)
def test_unsupported_mode_or_type(kw, needle):
    with pytest.raises(PydanticValidationError) as e:
        ModelConfig(path="m", **kw)
    assert needle in str(e.value)


@pytest.mark.parametrize(
    "kw,needle",
    [
        ({"motif_inference_mode": "rc_only"}, "checkpoints[run-7].motif_inference_mode='rc_only'"),
        ({"context_length": 511}, "checkpoints[run-7].context_length=511: must be even"),
        ({"type": "clm", "context_length": 513}, "checkpoints[run-7].context_length=513"),
    ],
)
def test_checkpoints_entry_is_checked_like_a_model(kw, needle):
    with pytest.raises(PydanticValidationError) as e:
        CheckpointsConfig(path="runs/run-7", **kw)
    assert needle in str(e.value)


@pytest.mark.parametrize("seq", ["ACGTXCGT", "acgtRcgt", "ACGT-CGT"])
def test_bad_characters(seq):
    raw = pd.DataFrame({"sequence": ["ACGTACGT", seq], "label": [0, 1]})
    with pytest.raises(ValidationError) as e:
        prepare_split(split(), SamplingConfig(), raw=raw)
    one_line(e.value, f"sequence={seq[4]!r}", "outside A/C/G/T/N", "row 1, position 4")


def test_bad_labels_and_sv_coordinates():
    raw = pd.DataFrame({"sequence": ["ACGTACGT"] * 2, "label": [0, 2]})
    with pytest.raises(ValidationError, match="labels must be 0 or 1, found 2"):
        prepare_split(split(), SamplingConfig(), raw=raw)
    sv = pd.DataFrame(
        {"RefSeq": ["ACGTACGT"], "MutSeq": ["ACGTACGT"], "left": [5], "right": [3], "label": [1]}
    )
    with pytest.raises(ValidationError) as e:
        prepare_split(
            split("structural_variant_effect_prediction", overrides={"flanking": 2}), SamplingConfig(), raw=sv
        )
    one_line(e.value, "left/right=(5, 3)")


def test_crop_that_removes_masks_is_rejected_in_config():
    with pytest.raises(PydanticValidationError, match="crop removes the masks"):
        EvalConfig(
            models=[{"path": "m", "context_length": 2}],
            splits=[{"task": "tis_recovery", "split": "test_maize", "seq_length": 64}],
        )


@pytest.mark.parametrize(
    "edit,expected",
    [
        (
            {"sampling": {"seeed": 1}},
            "sampling.seeed=1: unknown key (did you mean 'seed'? valid: max_size, rate, seed)",
        ),
        ({"compute": {"batchsize": 8}}, "compute.batchsize=8: unknown key (did you mean 'batch_size'?"),
        (
            {"models": [{"path": "m", "type": "mlm", "context_lenght": 9}]},
            "models[0].context_lenght=9: unknown key (did you mean 'context_length'?",
        ),
        (
            {"splits": [{"task": "tis_recovery", "split": "test_maize", "overides": {}}]},
            "splits[0].overides={}: unknown key (did you mean 'overrides'?",
        ),
        (
            {"splits": [{"task": "tis_recovery", "split": "test_maize", "overrides": {"motif_lenn": 3}}]},
            # checked by the task's family, which names the split by its key
            "splits[tis_recovery/test_maize].overrides.motif_lenn=3: unknown key (did you mean 'motif_len'?",
        ),
        ({"executor": {"retries": 2}}, "executor.retries=2: unknown key (valid: "),
        ({"gpus": 8}, "gpus=8: unknown key (valid: "),
    ],
    ids=["sampling", "compute", "models[0]", "splits[0]", "overrides", "no-close-key", "top-level"],
)
def test_unknown_keys_anywhere_get_did_you_mean(edit, expected):
    from plantcad_flows.cli.config_errors import config_error_lines

    data = {
        "models": [{"path": "m", "type": "mlm"}],
        "splits": [{"task": "tis_recovery", "split": "test_maize"}],
    }
    data.update(edit)
    with pytest.raises(PydanticValidationError) as e:
        EvalConfig.model_validate(data)
    lines = config_error_lines(e.value)
    assert len(lines) == 1 and lines[0].startswith("config error") and expected in lines[0], lines
    assert lines[0].startswith(f"config error: {expected}") or edit.get("splits"), lines
