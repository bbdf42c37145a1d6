"""Sequence handling: crops, reverse complement, byte arrays and tokenizer-parity of the id table."""

from __future__ import annotations

import numpy as np
import pytest
from model_factory import build_char_tokenizer

from plantcad_flows.errors import ValidationError
from plantcad_flows.sequences import (
    TokenTable,
    check_alphabet,
    crop_plan,
    reverse_complement,
    rows_to_str,
    to_bytes,
    upper,
)


def test_crop_plan_trims_equally_and_shifts_masks():
    plan = crop_plan(8192, 512)
    assert (plan.trim, plan.out_length) == (3840, 512)
    assert plan.shift([4094, 4095, 4096]).tolist() == [254, 255, 256]
    arr = to_bytes(["AACCGGTT"])
    small = crop_plan(8, 4)
    assert rows_to_str(small.apply(arr)) == ["CCGG"]
    assert small.shift([3, 4]).tolist() == [1, 2]
    assert small.inside(np.array([-1, 0, 3, 4])).tolist() == [False, True, True, False]


def test_no_crop_when_context_is_long_enough():
    plan = crop_plan(100, 8192)
    assert (plan.trim, plan.out_length) == (0, 100)


@pytest.mark.parametrize(
    "seq_length,context,field,value",
    [
        (8191, 512, "splits[].seq_length", 8191),
        (8192, 511, "models[].context_length", 511),
    ],
)
def test_odd_crop_lengths_are_rejected(seq_length, context, field, value):
    with pytest.raises(ValidationError) as e:
        crop_plan(seq_length, context)
    assert e.value.field == field and e.value.value == value
    assert field in str(e.value) and str(value) in str(e.value)


def test_reverse_complement_keeps_case_and_n():
    arr = to_bytes(["ACGTNacgtn", "AAAACCCGGT"])
    assert rows_to_str(reverse_complement(arr)) == ["nacgtNACGT", "ACCGGGTTTT"]
    assert rows_to_str(upper(arr)) == ["ACGTNACGTN", "AAAACCCGGT"]


def test_to_bytes_rejects_mixed_lengths():
    with pytest.raises(ValidationError, match=r"seqcol=3: mixed sequence lengths \(row 1"):
        to_bytes(["ACGT", "ACG"], field="seqcol")


def test_check_alphabet_names_character_and_row():
    check_alphabet(to_bytes(["ACGTNacgtn"]))
    with pytest.raises(ValidationError, match=r"seq='X': character outside A/C/G/T/N at row 7, position 2"):
        check_alphabet(to_bytes(["ACGT", "ACXT"]), field="seq", row_index=np.array([3, 7]))


def test_token_table_matches_tokenizer_on_mixed_case():
    tok = build_char_tokenizer()
    table = TokenTable(tok)
    rng = np.random.default_rng(1)
    seqs = ["".join(rng.choice(list("ACGTNacgtn"), 200)) for _ in range(20)]
    ids = table.encode(to_bytes(seqs))
    for s, row in zip(seqs, ids):
        assert row.tolist() == tok(s, add_special_tokens=False)["input_ids"]
    # lower and upper case give the same (lower-case vocabulary) ids
    assert table.encode(to_bytes(["ACGT"])).tolist() == table.encode(to_bytes(["acgt"])).tolist()
    assert table.encode(to_bytes(["acgt"]))[0].tolist() == [5, 6, 7, 8]


def test_token_table_rejects_multi_base_tokenizer():
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import Whitespace
    from transformers import PreTrainedTokenizerFast

    vocab = {"[UNK]": 0, "acgt": 1}
    core = Tokenizer(WordLevel(vocab=vocab, unk_token="[UNK]"))
    core.pre_tokenizer = Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=core, unk_token="[UNK]")
    with pytest.raises(ValidationError, match="not one token per base"):
        TokenTable(tok)
