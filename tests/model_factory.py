"""Tiny DNA language models built from configs, for tests and benchmarks (nothing downloaded).

`build_char_tokenizer` makes a character-level fast tokenizer with a Lowercase normalizer, as
PlantCaduceus's tokenizer is lower-case; `save_tiny_mlm` / `save_tiny_clm` write a randomly
initialised BertForMaskedLM / LlamaForCausalLM next to it, so tests load them back through the
same Auto-class code path (`plantcad_flows.scoring.loading.load_model`) as real models.
"""

from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import Tokenizer, normalizers, pre_tokenizers
from tokenizers.models import WordLevel
from transformers import BertConfig, BertForMaskedLM, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
NUCLEOTIDES = ["a", "c", "g", "t", "n"]
VOCAB = SPECIAL_TOKENS + NUCLEOTIDES


def build_char_tokenizer() -> PreTrainedTokenizerFast:
    """One token per character, lower-cased first; unknown characters map to [UNK]."""
    vocab = {tok: i for i, tok in enumerate(VOCAB)}
    core = Tokenizer(WordLevel(vocab=vocab, unk_token="[UNK]"))
    core.normalizer = normalizers.Lowercase()
    core.pre_tokenizer = pre_tokenizers.Split(pattern="", behavior="isolated")
    return PreTrainedTokenizerFast(
        tokenizer_object=core,
        pad_token="[PAD]",
        unk_token="[UNK]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
    )


def save_tiny_mlm(
    path: str | Path, layers: int = 2, hidden: int = 32, max_len: int = 1024, seed: int = 0
) -> Path:
    """A randomly initialised BertForMaskedLM + char tokenizer saved at `path`."""
    torch.manual_seed(seed)
    cfg = BertConfig(
        vocab_size=len(VOCAB),
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=max(1, hidden // 16),
        intermediate_size=hidden * 2,
        max_position_embeddings=max_len,
        pad_token_id=0,
    )
    model = BertForMaskedLM(cfg).eval()
    path = Path(path)
    model.save_pretrained(path)
    build_char_tokenizer().save_pretrained(path)
    return path


def save_tiny_clm(
    path: str | Path, layers: int = 2, hidden: int = 32, max_len: int = 1024, seed: int = 0
) -> Path:
    """A randomly initialised LlamaForCausalLM + char tokenizer saved at `path`."""
    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=len(VOCAB),
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=max(1, hidden // 16),
        num_key_value_heads=max(1, hidden // 16),
        intermediate_size=hidden * 2,
        max_position_embeddings=max_len,
        pad_token_id=0,
        bos_token_id=2,
        eos_token_id=3,
        tie_word_embeddings=False,
    )
    model = LlamaForCausalLM(cfg).eval()
    path = Path(path)
    model.save_pretrained(path)
    build_char_tokenizer().save_pretrained(path)
    return path
