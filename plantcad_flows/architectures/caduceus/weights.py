"""A Caduceus checkpoint into `CaduceusForMaskedLM`: strict, with every tie made explicitly.

Checkpoints come as `pytorch_model.bin` (a full state dict: tied tensors appear under each of
their names) or `model.safetensors` (shared tensors saved once, under one of their names), either
possibly sharded with an index. For each tie in `CaduceusForMaskedLM.tied_names`, whichever name
the file has fills the other; two names present with different values are an error. Then every
expected tensor must be there and every tensor in the file must be expected: a missing block norm
is an error naming it, never a silent re-initialisation. The complement-map buffers that
upstream saves are checked against config.json and not loaded (config.json is the one source).

Only weight files are read: a repository's `.py` files and its `auto_map` are never imported.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from plantcad_flows.architectures.caduceus.config import CaduceusSpec
from plantcad_flows.architectures.caduceus.model import CaduceusForMaskedLM

WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
_COMPLEMENT_BUFFERS = (
    "caduceus.backbone.embeddings.word_embeddings.complement_map",
    "lm_head.complement_map",
)


class CheckpointError(ValueError):
    """A checkpoint that does not fit the config: `tensor` names the first tensor at fault."""

    def __init__(self, tensor: str, problem: str):
        self.tensor, self.problem = tensor, problem
        super().__init__(f"{tensor}: {problem}")


def _read_file(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    return torch.load(path, map_location="cpu", weights_only=True)


def read_state_dict(directory: str | Path) -> dict[str, torch.Tensor]:
    """Every tensor of the checkpoint in `directory` (safetensors preferred, as transformers does).

    Raises:
        FileNotFoundError: none of `WEIGHT_FILES` is there.
    """
    directory = Path(directory)
    for name in WEIGHT_FILES:
        path = directory / name
        if not path.is_file():
            continue
        if name.endswith(".index.json"):
            shards = sorted(set(json.loads(path.read_text())["weight_map"].values()))
            state: dict[str, torch.Tensor] = {}
            for shard in shards:
                state.update(_read_file(directory / shard))
            return state
        return _read_file(path)
    raise FileNotFoundError(f"no weights in {directory} (none of {', '.join(WEIGHT_FILES)})")


def _untie(model: CaduceusForMaskedLM, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """`state` with each tie's missing names filled from the name that is present."""
    state = dict(state)
    for alias, source in model.tied_names():
        present = [n for n in (source, alias) if n in state]
        if not present:
            raise CheckpointError(source, f"missing (nor is its tied copy {alias} there)")
        if len(present) == 2 and not torch.equal(state[source], state[alias]):
            raise CheckpointError(alias, f"tied to {source} but holds different values")
        state[source] = state[alias] = state[present[0]]
    return state


def _check_buffers(model: CaduceusForMaskedLM, state: dict[str, torch.Tensor]) -> None:
    expected = model.spec.complement_map
    for name in _COMPLEMENT_BUFFERS:
        if name not in state:
            continue
        if expected is None:
            raise CheckpointError(name, "present but config.json says rcps: false")
        saved = tuple(int(v) for v in state.pop(name).tolist())
        if saved != expected:
            raise CheckpointError(
                name, f"{list(saved)} differs from config.json complement_map {list(expected)}"
            )


def load_weights(model: CaduceusForMaskedLM, state: dict[str, torch.Tensor]) -> CaduceusForMaskedLM:
    """Load `state` into `model`, strictly, and re-make its ties.

    Raises:
        CheckpointError: a tensor missing, unexpected, of the wrong shape, or a tie broken.
    """
    state = _untie(model, state)
    _check_buffers(model, state)
    own = model.state_dict()
    for name in own:
        if name not in state:
            raise CheckpointError(name, "missing from the checkpoint")
    for name, tensor in state.items():
        if name not in own:
            raise CheckpointError(name, "in the checkpoint but not in the model config.json describes")
        if tensor.shape != own[name].shape:
            raise CheckpointError(
                name, f"shape {tuple(tensor.shape)}, config.json gives {tuple(own[name].shape)}"
            )
    model.load_state_dict(state, strict=True, assign=True)  # the checkpoint's tensors, not copies
    model.tie_weights()
    return model


def load_caduceus(
    directory: str | Path, spec: CaduceusSpec, dtype: torch.dtype = torch.float32
) -> CaduceusForMaskedLM:
    """The model `spec` describes, with the weights in `directory`, in `dtype`, in eval mode.

    The model is built on the meta device and takes the checkpoint's tensors as its parameters,
    so the weights are in memory once (never a random initialisation beside the loaded copy).
    """
    with torch.device("meta"):
        model = CaduceusForMaskedLM(spec)
    model = load_weights(model, read_state_dict(directory))
    model = model.to(dtype)
    model.tie_weights()
    return model.eval()


def save_checkpoint(model: CaduceusForMaskedLM, config: dict, directory: str | Path) -> Path:
    """Write config.json and model.safetensors as transformers would: each shared tensor once,
    under its source name (the aliases in `tied_names` left out)."""
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    state = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}
    for alias, _ in model.tied_names():
        state.pop(alias, None)
    save_file(state, str(directory / "model.safetensors"), metadata={"format": "pt"})
    return directory
