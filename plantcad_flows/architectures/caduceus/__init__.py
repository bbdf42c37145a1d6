"""Caduceus (Caduceus-Ph, Caduceus-PS / PlantCaduceus, PlantCAD2): a bidirectional Mamba masked LM,
optionally reverse-complement parameter-shared (RCPS).

* `config`: config.json read into a frozen spec; every key or value not implemented is refused.
* `scan`: the selective scan (Mamba v1) and the SSD scan (Mamba v2), chunked, with the plain
  sequential scans kept beside them as the reference; v1 on a CPU dispatches to
* `cpu_scan`: the v1 scan compiled with numba (state in registers), forward and backward.
* `kernels`: mamba_ssm's CUDA kernels for the same scans, where they import.
* `mixers`: the Mamba v1 and v2 mixers and the bidirectional and RCPS wrappers.
* `model`: embeddings, blocks, backbone and LM head; attribute names are the tensor names.
* `weights`: reading a checkpoint (.bin or .safetensors) into a model built on the meta device,
  its ties, and the strict checks.
* `tokenizer`: the PlantCAD vocabulary.
"""

from plantcad_flows.architectures.caduceus.config import (
    MODEL_TYPE,
    CaduceusSpec,
    UnsupportedConfig,
    parse_config,
)

__all__ = ["MODEL_TYPE", "CaduceusSpec", "UnsupportedConfig", "parse_config"]
