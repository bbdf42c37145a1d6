"""Train the shipped tiny DNA language models on the synthetic genome (CPU, a few minutes each).

    python scripts/train_tiny_models.py [--which mlm clm caduceus] [--short-steps 2000] [--steps 150] [--caduceus-steps 600] [--threads 1] [--out plantcad_flows/assets/models]

Both models read 512-bp windows of `plantcad_flows.families.genome.sample_genome` (a training genome drawn
from its own seed, never the benchmark's examples) through a character tokenizer (lower-case
a/c/g/t/n plus [PAD] [UNK] [CLS] [SEP] [MASK]; a Lowercase normalizer, so mixed case maps to the
same ids, and no special tokens are added when `add_special_tokens=False`):

* tiny-mlm: ModernBertForMaskedLM, 4 layers, hidden 128. Masking picks ~30% of positions as spans of
  1-3 bases (the benchmark masks 1-3 contiguous bases), 80/10/10 mask/random/keep.
* tiny-clm: LlamaForCausalLM, 4 layers, hidden 128, next-base loss.
* tiny-caduceus: an RCPS Caduceus (Mamba v1, bidirectional, fused add + RMSNorm, as PlantCaduceus
  is built), 2 layers, d_model 32, trained with this project's own implementation
  (`plantcad_flows.architectures.caduceus`; on CPU its scan runs compiled, forward and backward)
  and saved as PlantCaduceus is: config.json with model_type caduceus, model.safetensors, and the
  PlantCAD tokenizer (`[PAD] [MASK] [UNK] a c g t`). Same masking as tiny-mlm; `--caduceus-steps`
  steps on 128-bp windows, batch 32, peak learning rate `--caduceus-lr`. The shipped one is the
  defaults (600 steps at 6e-3): 0.15 s per step on one thread, 90 s of training, 1 min 47 s for the
  whole command on a 2-core machine (the same beside another process using most of both cores; the
  scan's chunked PyTorch form took 0.55-0.60 s per step). Its check: held-out masked accuracy
  0.392, conservation AUROC 0.58 / 0.98 / 0.92, donor motif accuracy 0.72, TIS 0.58 (the earlier
  150 steps at 3e-3: 0.366, 0.46 / 0.68 / 0.50, 0.00, 0.00). Rerun on the current code it gives the
  same check figures and weights within 4e-6 of the shipped ones (the causal conv's terms have
  been summed in another order since; 1 min 30 s on an idle machine).

The shipped models came from `--which clm --short-steps 300 --steps 100` (about 12 min) and
`--which mlm` (the defaults: 2,000 + 150 steps, about 19 min on a busy 2-core machine). Everything is seeded. After training, a check prints, with plain model calls, held-out masked-base
accuracy (the MLMs; windows of the training genome no run trains on) and, on the synthetic
benchmark (centre-cropped to 512), conservation AUROC and motif accuracy.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import roc_auc_score
from tokenizers import Tokenizer, normalizers, pre_tokenizers
from tokenizers.models import WordLevel
from transformers import (
    AutoModelForCausalLM,
    AutoModelForMaskedLM,
    LlamaConfig,
    LlamaForCausalLM,
    ModernBertConfig,
    ModernBertForMaskedLM,
    PreTrainedTokenizerFast,
)

from plantcad_flows.architectures.caduceus import parse_config
from plantcad_flows.architectures.caduceus.model import CaduceusForMaskedLM
from plantcad_flows.architectures.caduceus.tokenizer import PLANTCAD_VOCAB, plantcad_tokenizer
from plantcad_flows.architectures.caduceus.weights import save_checkpoint
from plantcad_flows.benchmark.synthetic import ASSETS_MODELS, build_split
from plantcad_flows.families import builtin_tasks, get_family
from plantcad_flows.families import genome as genome

TASKS = builtin_tasks()
CONSERVATION = get_family("evolutionary_conservation")
MOTIF = get_family("motif_recovery")
CORE_NONCORE = get_family("core_noncore_classification")

SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
VOCAB = {tok: i for i, tok in enumerate(SPECIAL + list("acgtn"))}
CONTEXT = 512
TRAIN_SEED = 7  # the training genome's seed; benchmarks use their own streams
MASK_ID = VOCAB["[MASK]"]
ACGT_IDS = [VOCAB[c] for c in "acgt"]
PLANTCAD = {tok: i for i, tok in enumerate(PLANTCAD_VOCAB)}
# (vocabulary, [MASK] id, a/c/g/t ids) of each model's tokenizer
VOCABS = {
    "mlm": (VOCAB, MASK_ID, ACGT_IDS),
    "clm": (VOCAB, MASK_ID, ACGT_IDS),
    "caduceus": (PLANTCAD, PLANTCAD["[MASK]"], [PLANTCAD[c] for c in "acgt"]),
}


def build_tokenizer() -> PreTrainedTokenizerFast:
    core = Tokenizer(WordLevel(vocab=VOCAB, unk_token="[UNK]"))
    core.normalizer = normalizers.Lowercase()
    core.pre_tokenizer = pre_tokenizers.Split(pattern="", behavior="isolated")
    return PreTrainedTokenizerFast(
        tokenizer_object=core,
        model_max_length=CONTEXT,
        pad_token="[PAD]",
        unk_token="[UNK]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
    )


def encode(arr: np.ndarray, vocab: dict[str, int] = VOCAB) -> np.ndarray:
    """uint8 upper-case bases -> token ids (the tokenizer's ids; checked in `check_tokenizer`)."""
    lut = np.full(256, vocab["[UNK]"], dtype=np.int64)
    for c in "acgtn":
        if c in vocab:
            lut[ord(c)] = lut[ord(c.upper())] = vocab[c]
    return lut[arr]


def check_tokenizer(tok: PreTrainedTokenizerFast, vocab: dict[str, int] = VOCAB) -> None:
    probe = "ACGTNacgtnGattaca"
    assert (
        tok(probe, add_special_tokens=False)["input_ids"]
        == encode(np.frombuffer(probe.encode(), np.uint8), vocab).tolist()
    )


def training_windows(
    n: int, length: int, seed: int, phase: int, vocab: dict[str, int] = VOCAB
) -> torch.Tensor:
    """n token windows of `length` bases, half from each species' genome."""
    rng = np.random.default_rng([TRAIN_SEED, seed, phase])
    half = [genome.sample_genome(rng, n // 2 * length + length, sp) for sp in genome.SPECIES_GC]
    rows = [h[i * length : (i + 1) * length] for h in half for i in range(n // 2)]
    out = encode(np.stack(rows), vocab)
    return torch.from_numpy(out[rng.permutation(len(out))])


def optimise(model, loss, opt, sched) -> None:
    """One optimiser step on `loss`, gradients clipped to norm 1."""
    opt.zero_grad()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    sched.step()


def log_step(which: str, step: int, steps: int, length: int, loss, t0: float) -> None:
    if step % 25 == 0 or step == steps - 1:
        print(
            f"[{which}] step {step:4d} len {length} loss {loss.item():.4f} ({time.time() - t0:.0f}s)",
            flush=True,
        )


def span_mask(
    ids: torch.Tensor,
    gen: torch.Generator,
    rate: float = 0.3,
    mask_id: int = MASK_ID,
    acgt: list[int] = ACGT_IDS,
) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT-style corruption over spans of 1-3 positions; labels are -100 off the chosen set."""
    b, length = ids.shape
    starts = torch.rand(b, length, generator=gen) < rate / 2
    span = torch.randint(1, 4, (b, length), generator=gen)
    chosen = torch.zeros(b, length, dtype=torch.bool)
    for k in range(3):
        shifted = starts & (span > k)
        chosen[:, k:] |= shifted[:, : length - k]
    labels = torch.where(chosen, ids, torch.full_like(ids, -100))
    roll = torch.rand(b, length, generator=gen)
    inputs = ids.clone()
    inputs[chosen & (roll < 0.8)] = mask_id
    rand = chosen & (roll >= 0.8) & (roll < 0.9)
    inputs[rand] = torch.tensor(acgt)[torch.randint(0, 4, (int(rand.sum()),), generator=gen)]
    return inputs, labels


def caduceus_config() -> dict:
    """tiny-caduceus's config.json: PlantCaduceus's layout and settings, at a tiny size."""
    return {
        "model_type": "caduceus",
        "architectures": ["CaduceusForMaskedLM"],
        "d_model": 32,
        "n_layer": 2,
        "vocab_size": len(PLANTCAD_VOCAB),
        "ssm_cfg": {
            "d_state": 8,
            "d_conv": 4,
            "expand": 2,
            "dt_rank": "auto",
            "conv_bias": True,
            "bias": False,
        },
        "rms_norm": True,
        "residual_in_fp32": True,
        "fused_add_norm": True,
        "pad_vocab_size_multiple": 8,
        "norm_epsilon": 1e-5,
        "bidirectional": True,
        "bidirectional_strategy": "add",
        "bidirectional_weight_tie": True,
        "rcps": True,
        "complement_map": {str(i): i for i in range(8)} | {"3": 6, "4": 5, "5": 4, "6": 3},
    }


def build_caduceus(seed: int) -> CaduceusForMaskedLM:
    """Mamba's initialisation: dt_proj's bias puts softplus(bias) log-uniform in [1e-3, 0.1];
    embeddings N(0, 0.02)."""
    torch.manual_seed(seed)
    model = CaduceusForMaskedLM(parse_config(caduceus_config()))
    with torch.no_grad():
        model.caduceus.backbone.embeddings.word_embeddings.embedding.weight.normal_(0, 0.02)
        for name, p in model.named_parameters():
            if name.endswith("dt_proj.bias"):
                dt = torch.exp(torch.rand_like(p) * (math.log(0.1) - math.log(1e-3)) + math.log(1e-3))
                p.copy_(dt + torch.log(-torch.expm1(-dt)))
    return model


def train_caduceus(steps: int, lr: float, seed: int) -> CaduceusForMaskedLM:
    """MLM training of tiny-caduceus on 128-bp windows, batch 32 (the same masking as tiny-mlm)."""
    vocab, mask_id, acgt = VOCABS["caduceus"]
    model = build_caduceus(seed)
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01, betas=(0.9, 0.98))
    warm = max(1, steps // 10)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warm) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / steps)))
    )
    data = training_windows(steps * 32, 128, seed, 0, vocab)
    model.train()
    t0 = time.time()
    for step in range(steps):
        inputs, labels = span_mask(data[step * 32 : (step + 1) * 32], gen, mask_id=mask_id, acgt=acgt)
        logits = model(inputs)[0]
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=-100)
        optimise(model, loss, opt, sched)
        log_step("caduceus", step, steps, 128, loss, t0)
    print(f"[caduceus] {(time.time() - t0) / steps:.3f} s per step", flush=True)
    return model.eval()


def build_model(which: str):
    common = dict(
        vocab_size=len(VOCAB),
        hidden_size=128,
        num_hidden_layers=4,
        num_attention_heads=4,
        max_position_embeddings=CONTEXT,
        pad_token_id=0,
    )
    if which == "mlm":
        # ModernBERT rather than BERT: pre-norm with rotary positions trains here in minutes, where
        # post-norm BERT with learned positions stayed at the base-composition loss (~1.32 nats)
        # for 400 steps. Two layers attend within a 64-bp window, two globally.
        return ModernBertForMaskedLM(
            ModernBertConfig(
                **common,
                intermediate_size=256,
                global_attn_every_n_layers=2,
                local_attention=64,
                cls_token_id=2,
                sep_token_id=3,
                bos_token_id=2,
                eos_token_id=3,
                mask_token_id=MASK_ID,
                embedding_dropout=0.0,
                attention_dropout=0.0,
                mlp_dropout=0.0,
            )
        )
    return LlamaForCausalLM(
        LlamaConfig(
            **common,
            intermediate_size=384,
            num_key_value_heads=4,
            bos_token_id=2,
            eos_token_id=3,
            tie_word_embeddings=True,
        )
    )


def train(which: str, phases: list[tuple[int, int, int]], lr: float, seed: int, init: Path | None = None):
    """Train through `phases` of (steps, window length, batch size).

    A short-window phase first: local structure is learned much faster when attention has 128
    positions to search rather than 512 (random position offsets keep all 512 position embeddings
    trained); then full 512-bp windows, the context the benchmark is scored at.
    """
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    if init is None:
        model = build_model(which)
    else:  # continue training a saved model (a second round with a new seed draws new windows)
        auto = AutoModelForMaskedLM if which == "mlm" else AutoModelForCausalLM
        model = auto.from_pretrained(init)
    steps = sum(p[0] for p in phases)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01, betas=(0.9, 0.98))
    warm = max(1, steps // 10)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warm) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / steps)))
    )
    model.train()
    t0, step = time.time(), 0
    for phase, (n_steps, length, batch) in enumerate(phases):
        data = training_windows(n_steps * batch, length, seed, phase)
        for i in range(n_steps):
            ids = data[i * batch : (i + 1) * batch]
            offset = int(torch.randint(0, CONTEXT - length + 1, (1,), generator=gen))
            pos = (torch.arange(length) + offset).expand(len(ids), -1)
            if which == "mlm":
                inputs, labels = span_mask(ids, gen)
                loss = model(input_ids=inputs, position_ids=pos, labels=labels).loss
            else:
                loss = model(input_ids=ids, position_ids=pos, labels=ids).loss
            optimise(model, loss, opt, sched)
            log_step(which, step, steps, length, loss, t0)
            step += 1
    return model.eval()


@torch.no_grad()
def acgt_probs(model, which: str, ids: torch.Tensor, positions: list[int]) -> np.ndarray:
    """(n, P, 4) A/C/G/T probabilities at `positions` (MLM: masked; CLM: logits at i-1)."""
    _, mask_id, acgt = VOCABS[which]
    out = []
    for chunk in ids.split(32):
        if which == "clm":
            logits = model(input_ids=chunk).logits[:, [p - 1 for p in positions]]
        else:
            chunk = chunk.clone()
            chunk[:, positions] = mask_id
            logits = model(input_ids=chunk)
            logits = (logits[0] if isinstance(logits, tuple) else logits.logits)[:, positions]
        out.append(torch.softmax(logits[..., acgt].float(), -1).numpy())
    return np.concatenate(out)


def quick_check(model, which: str, n: int = 100) -> dict[str, float]:
    """Conservation AUROC and motif accuracy with plain model calls on a small synthetic benchmark."""
    length = 2048
    trim = (length - CONTEXT) // 2
    result = {}
    for task, spec in TASKS.items():
        if spec.family_object not in (CONSERVATION, MOTIF, CORE_NONCORE):
            continue
        split = spec.splits[0]
        frame = build_split(task, split, seed=123, n_examples=n, seq_length=length)
        arr = np.stack([np.frombuffer(s.upper().encode(), np.uint8) for s in frame["sequence"]])
        arr = arr[:, trim : trim + CONTEXT]
        n_masks = spec.family_object.num_masks(spec)
        start = CONTEXT // 2 - 1 - (n_masks - 1) // 2
        pos = list(range(start, start + n_masks))
        probs = acgt_probs(model, which, torch.from_numpy(encode(arr, VOCABS[which][0])), pos)
        true = np.searchsorted(np.frombuffer(b"ACGT", np.uint8), arr[:, pos]).clip(0, 3)
        valid = np.isin(arr[:, pos], np.frombuffer(b"ACGT", np.uint8))
        p_true = np.take_along_axis(probs, true[..., None], -1)[..., 0] * valid
        if spec.family_object == MOTIF:
            ok = (probs.argmax(-1) == true) & valid
            keep = valid.all(1)
            result[f"{task}/motif_accuracy"] = float(ok[keep].all(1).mean())
        else:
            result[f"{task}/auroc"] = float(roc_auc_score(frame["label"], p_true.mean(1)))
    return result


@torch.no_grad()
def masked_accuracy(model, which: str, n: int = 256, length: int = 128) -> float:
    """Held-out masked-base accuracy (an MLM): windows of the training genome from a phase no
    training run draws, masked as in training; the share of masked a/c/g/t bases whose most
    probable base is the true one (base composition alone gives about 0.3)."""
    vocab, mask_id, acgt = VOCABS[which]
    gen = torch.Generator().manual_seed(99)
    ids = training_windows(n, length, 99, 99, vocab)
    inputs, labels = span_mask(ids, gen, mask_id=mask_id, acgt=acgt)
    hits = total = 0
    for x, y in zip(inputs.split(32), labels.split(32)):
        logits = model(input_ids=x)
        logits = logits[0] if isinstance(logits, tuple) else logits.logits
        keep = torch.isin(y, torch.tensor(acgt))
        pred = torch.tensor(acgt)[logits[..., acgt].argmax(-1)]
        hits += int((pred == y)[keep].sum())
        total += int(keep.sum())
    return hits / total


def save(model, which: str, out: Path) -> Path:
    path = out / f"tiny-{which}"
    path.mkdir(parents=True, exist_ok=True)
    if which == "caduceus":
        save_checkpoint(model, caduceus_config(), path)
        plantcad_tokenizer().save_pretrained(path)
        return path
    model.save_pretrained(path, safe_serialization=True)
    build_tokenizer().save_pretrained(path)
    return path


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--which", nargs="+", default=["mlm", "clm", "caduceus"], choices=["mlm", "clm", "caduceus"]
    )
    ap.add_argument(
        "--caduceus-steps", type=int, default=600, help="tiny-caduceus: steps on 128-bp windows, batch 32"
    )
    ap.add_argument("--caduceus-lr", type=float, default=6e-3, help="tiny-caduceus's peak learning rate")
    ap.add_argument("--short-steps", type=int, default=2000, help="steps on 128-bp windows, batch 32")
    ap.add_argument("--steps", type=int, default=150, help="steps on 512-bp windows, batch 8")
    # One thread: with other work on a 2-core box, two OpenMP threads spin-wait and run 5x slower.
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=ASSETS_MODELS)
    ap.add_argument("--init", type=Path, default=None, help="continue from this saved model")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    check_tokenizer(build_tokenizer())
    check_tokenizer(plantcad_tokenizer(), PLANTCAD)
    for which in args.which:
        t0 = time.time()
        if which == "caduceus":
            model = train_caduceus(args.caduceus_steps, args.caduceus_lr, args.seed)
        else:
            phases = [(args.short_steps, 128, 32), (args.steps, CONTEXT, 8)]
            model = train(which, phases, args.lr, args.seed, args.init)
        minutes = (time.time() - t0) / 60
        checks = quick_check(model, which)
        if which != "clm":
            checks["heldout/masked_accuracy"] = masked_accuracy(model, which)
        path = save(model, which, args.out)
        size = sum(f.stat().st_size for f in path.iterdir()) / 1e6
        print(
            json.dumps(
                {
                    "model": which,
                    "train_minutes": round(minutes, 2),
                    "size_mb": round(size, 2),
                    **{k: round(v, 3) for k, v in checks.items()},
                },
                indent=1,
            )
        )


if __name__ == "__main__":
    main()
