"""The native Caduceus against mamba_ssm's kernels on the same weights (CUDA only; skipped
elsewhere). Prints the max-abs logit differences in fp32 and bf16, and holds them to bounds:
fp32 at mamba_ssm's own kernel-vs-reference tolerance, bf16 loosely (both paths round the
stream to bf16 at different points)."""

from __future__ import annotations

import pytest
import torch
from caduceus_factory import caduceus_config, random_caduceus

from plantcad_flows.architectures.caduceus import kernels

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(kernels.available() is not None, reason=f"needs {kernels.available()}"),
]


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_native_and_kernels_give_the_same_logits(version, capsys):
    config = caduceus_config(rcps=True, version=version, d_model=128, n_layer=4)
    if version == "v2":  # the kernels need headdim and d_state a multiple of 8 and chunk >= 16
        config["layer_cfg"]["mamba_cfg"]["ssm_cfg"] = {"d_state": 64, "headdim": 32, "chunk_size": 64}
    model = random_caduceus(config).cuda()
    ids = torch.randint(3, 7, (2, 1000), generator=torch.Generator().manual_seed(0)).cuda()
    for dtype, bound in ((torch.float32, 2e-3), (torch.bfloat16, 0.25)):
        m = model.to(dtype)
        m.tie_weights()
        with torch.inference_mode():
            m.use_kernels(False)
            native = m(ids)[0]
            m.use_kernels(True)
            fast = m(ids)[0]
        diff = (native - fast).abs().max().item()
        with capsys.disabled():
            print(
                f"\n{version} {dtype}: max |native - kernels| logit = {diff:.3g} (max |logit| {native.abs().max().item():.3g})"
            )
        assert diff <= bound * max(1.0, native.abs().max().item())
