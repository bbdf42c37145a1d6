"""The PlantCAD vocabulary, for the tiny demo model and the tests.

PlantCaduceus and PlantCAD2 tokenise one lower-case character per base: `[PAD]` 0, `[MASK]` 1,
`[UNK]` 2, then `a c g t` as 3 4 5 6, padded to 8 ids in the model. Their complement map pairs
3<->6 (a<->t) and 4<->5 (c<->g). Upper-case input is lower-cased first.
"""

from __future__ import annotations

PLANTCAD_VOCAB = ("[PAD]", "[MASK]", "[UNK]", "a", "c", "g", "t")
PLANTCAD_COMPLEMENT = {"a": "t", "c": "g", "g": "c", "t": "a"}


def plantcad_tokenizer():
    """A fast tokenizer with the PlantCAD vocabulary (no BOS/EOS added)."""
    from tokenizers import Tokenizer, normalizers, pre_tokenizers
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(WordLevel(vocab={t: i for i, t in enumerate(PLANTCAD_VOCAB)}, unk_token="[UNK]"))
    core.normalizer = normalizers.Lowercase()
    core.pre_tokenizer = pre_tokenizers.Split(pattern="", behavior="isolated")
    return PreTrainedTokenizerFast(
        tokenizer_object=core, pad_token="[PAD]", unk_token="[UNK]", mask_token="[MASK]"
    )
