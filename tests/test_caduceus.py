"""The native Caduceus (issue 26): the function the checkpoints were trained as, on small sizes.

* the v1 and v2 mixers against transformers' own `MambaMixer` / `Mamba2Mixer` torch paths, with
  the same weights copied in;
* the chunked scans against the sequential references, across chunk borders, and the compiled CPU
  scan against the reference, alone and batched, on one thread and on several;
* the compiled scan's gradients against autograd through the chunked scan and through the
  float64 reference, and a training step of an RCPS model through either scan;
* reverse-complement equivariance of whole RCPS models (fused and unfused norms, v1 and v2);
* a safetensors checkpoint with tied tensors left out against the full .bin of the same model,
  and a checkpoint missing one norm tensor refused, naming it;
* config.json keys and values that are not implemented refused, naming them.
"""

from __future__ import annotations

import pytest
import torch
from caduceus_factory import caduceus_config, random_caduceus, save_caduceus

from plantcad_flows.architectures.caduceus import cpu_scan
from plantcad_flows.architectures.caduceus.config import MambaSpec, UnsupportedConfig, parse_config
from plantcad_flows.architectures.caduceus.mixers import Mamba, Mamba2
from plantcad_flows.architectures.caduceus.scan import (
    selective_scan,
    selective_scan_chunked,
    selective_scan_reference,
    ssd_scan,
    ssd_scan_reference,
)
from plantcad_flows.architectures.caduceus.weights import CheckpointError, load_caduceus


def _randomise(module: torch.nn.Module, seed: int = 0) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.3)


def test_v1_mixer_matches_transformers_mamba_mixer():
    from transformers import MambaConfig
    from transformers.models.mamba.modeling_mamba import MambaMixer

    cfg = MambaConfig(hidden_size=16, state_size=4, expand=2, conv_kernel=4, time_step_rank=3, use_bias=True)
    theirs = MambaMixer(cfg, layer_idx=0).eval()
    _randomise(theirs)
    with torch.no_grad():
        theirs.A_log.copy_(torch.log(torch.rand_like(theirs.A_log) * 4 + 0.5))
    ours = Mamba(
        MambaSpec(
            version="v1", d_model=16, d_state=4, d_conv=4, expand=2, bias=True, conv_bias=True, dt_rank=3
        )
    )
    ours.load_state_dict(theirs.state_dict(), strict=True)
    x = torch.randn(2, 150, 16, generator=torch.Generator().manual_seed(1))  # > 2 scan chunks
    with torch.no_grad():
        expected, got = theirs(x), ours(x)
    torch.testing.assert_close(got, expected, rtol=6e-4, atol=2e-4)


def test_v2_mixer_matches_transformers_mamba2_mixer():
    from transformers import Mamba2Config
    from transformers.models.mamba2.modeling_mamba2 import Mamba2Mixer

    cfg = Mamba2Config(
        hidden_size=32,
        num_heads=4,
        head_dim=16,
        expand=2,
        state_size=8,
        n_groups=2,
        conv_kernel=4,
        chunk_size=16,
        use_bias=False,
        use_conv_bias=True,
        layer_norm_epsilon=1e-5,
    )
    theirs = Mamba2Mixer(cfg, layer_idx=0).eval()
    _randomise(theirs)
    with torch.no_grad():
        theirs.A_log.copy_(torch.log(torch.rand_like(theirs.A_log) * 4 + 0.5))
        theirs.norm.weight.copy_(1 + 0.1 * torch.randn_like(theirs.norm.weight))
    spec = MambaSpec(
        version="v2",
        d_model=32,
        d_state=8,
        d_conv=4,
        expand=2,
        bias=False,
        conv_bias=True,
        headdim=16,
        ngroups=2,
    )
    ours = Mamba2(spec)
    ours.load_state_dict(theirs.state_dict(), strict=True)
    x = torch.randn(2, 50, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = theirs(x)
        got = ours(x)
        ours.spec = MambaSpec(**{**spec.__dict__, "chunk_size": 16})  # the chunk length must not matter
        got_small_chunks = ours(x)
    torch.testing.assert_close(got, expected, rtol=6e-4, atol=2e-4)
    torch.testing.assert_close(got_small_chunks, expected, rtol=6e-4, atol=2e-4)


def test_chunked_scans_equal_the_sequential_references():
    gen = torch.Generator().manual_seed(0)
    b, length, d, n = 2, 150, 8, 4
    x, dt = torch.randn(b, length, d, generator=gen), torch.rand(b, length, d, generator=gen)
    A, D = -3 * torch.rand(d, n, generator=gen), torch.randn(d, generator=gen)
    B, C = torch.randn(b, length, n, generator=gen), torch.randn(b, length, n, generator=gen)
    expected = selective_scan_reference(x, dt, A, B, C, D)
    torch.testing.assert_close(
        selective_scan_chunked(x, dt, A, B, C, D, block=3), expected, rtol=6e-4, atol=2e-4
    )
    for chunk in (1, 16, 64, 256):
        torch.testing.assert_close(
            selective_scan_chunked(x, dt, A, B, C, D, chunk=chunk), expected, rtol=6e-4, atol=2e-4
        )
    h, p, g = 4, 3, 2
    x, dt = torch.randn(b, length, h, p, generator=gen), torch.rand(b, length, h, generator=gen)
    A, D = -3 * torch.rand(h, generator=gen), torch.randn(h, generator=gen)
    B, C = torch.randn(b, length, g, n, generator=gen), torch.randn(b, length, g, n, generator=gen)
    expected = ssd_scan_reference(x, dt, A, B, C, D)
    for chunk in (1, 32, 256):
        torch.testing.assert_close(ssd_scan(x, dt, A, B, C, D, chunk), expected, rtol=6e-4, atol=2e-4)


def test_compiled_cpu_scan_equals_the_reference_whatever_the_batch_and_threads():
    gen = torch.Generator().manual_seed(3)
    b, length, d, n = 3, 300, 37, 16  # 37 channels: two groups of 16 lanes and a padded one
    x = torch.randn(b, length, d, generator=gen)
    # step sizes from 1e-4 to ~50: the largest take dt * A below exp's floor of -87
    dt = torch.exp(torch.empty(b, length, d).uniform_(-9.2, 4.0, generator=gen))
    A, D = -torch.exp(torch.randn(d, n, generator=gen)), torch.randn(d, generator=gen)
    B, C = torch.randn(b, length, n, generator=gen), torch.randn(b, length, n, generator=gen)
    # the exact answer (float64); every float32 form, the sequential one included, is ~2e-5 x (|y| + 1)
    # from it here, where |y| reaches ~1,700
    exact = selective_scan_reference(*(t.double() for t in (x, dt, A, B, C, D)))
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        alone = [
            cpu_scan.selective_scan_cpu(x[i : i + 1], dt[i : i + 1], A, B[i : i + 1], C[i : i + 1], D)
            for i in range(b)
        ]
        torch.set_num_threads(2)
        with torch.no_grad():
            batched = selective_scan(x, dt, A, B, C, D)  # no autograd on a CPU: the compiled scan
    finally:
        torch.set_num_threads(threads)
    torch.testing.assert_close(batched.double(), exact, rtol=5e-5, atol=5e-5)
    torch.testing.assert_close(
        selective_scan_reference(x, dt, A, B, C, D).double(), exact, rtol=5e-5, atol=5e-5
    )
    # each (sequence, channel) alone and in a fixed order: bit-identical across batches and threads
    assert torch.equal(torch.cat(alone), batched)
    # with autograd the compiled scan with its backward runs, and gives the same function
    x.requires_grad_(True)
    trained = selective_scan(x, dt, A, B, C, D)
    assert type(trained.grad_fn).__name__ == "CompiledScanBackward"
    torch.testing.assert_close(trained.detach(), batched, rtol=0, atol=0)


def _scan_inputs(seed: int, b: int, length: int, d: int, n: int, dtype=torch.float64):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(b, length, d, generator=gen, dtype=torch.float64)
    # step sizes from 1e-4 to ~7: decays from ~1 to far below float32's exp floor
    dt = torch.exp(torch.empty(b, length, d, dtype=torch.float64).uniform_(-9.2, 2.0, generator=gen))
    A = -torch.exp(torch.randn(d, n, generator=gen, dtype=torch.float64))
    D = torch.randn(d, generator=gen, dtype=torch.float64)
    B = torch.randn(b, length, n, generator=gen, dtype=torch.float64)
    C = torch.randn(b, length, n, generator=gen, dtype=torch.float64)
    dy = torch.randn(b, length, d, generator=gen, dtype=torch.float64)
    return [t.to(dtype) for t in (x, dt, A, B, C, D)], dy


def _scan_grads(scan, inputs, dy):
    leaves = [t.detach().clone().requires_grad_(True) for t in inputs]
    y = scan(*leaves)
    y.backward(dy.to(y.dtype))
    return y, [t.grad for t in leaves]


@pytest.mark.parametrize("checkpoint", [64, 7])
def test_compiled_scan_gradients_equal_the_chunked_scans_and_the_float64_reference(checkpoint, monkeypatch):
    """21 channels (a padded group of 16 lanes), 200 positions (4 checkpoint chunks, the last
    partial; 29 of 7 positions), dt * A from ~0 to below exp's floor."""
    monkeypatch.setattr(cpu_scan, "CHECKPOINT", checkpoint)
    inputs, dy = _scan_inputs(5, 2, 200, 21, 5)
    _, exact = _scan_grads(selective_scan_reference, inputs, dy)  # float64 throughout
    y, compiled = _scan_grads(cpu_scan.selective_scan_cpu_with_grad, [t.float() for t in inputs], dy)
    _, chunked = _scan_grads(selective_scan_chunked, [t.float() for t in inputs], dy)
    assert y.dtype == torch.float32
    for name, e, c, k in zip(("x", "dt", "A", "B", "C", "D"), exact, compiled, chunked):
        # float32 sums over up to 200 positions x 21 channels: both scans are within ~3e-7 x the
        # gradient's largest magnitude of the exact one; allowed 5e-6
        tol = 5e-6 * float(e.abs().max())
        assert c.dtype == torch.float32 and c.shape == e.shape, name
        torch.testing.assert_close(c.double(), e, rtol=0, atol=tol, msg=name)
        torch.testing.assert_close(k.double(), e, rtol=0, atol=tol, msg=name)
        torch.testing.assert_close(c, k, rtol=0, atol=2 * tol, msg=name)


def test_compiled_scan_takes_any_float_dtype_and_returns_gradients_in_it():
    inputs, dy = _scan_inputs(6, 1, 40, 16, 4)
    inputs = [inputs[0].bfloat16(), *inputs[1:]]  # x in bfloat16, the rest float64
    y, grads = _scan_grads(cpu_scan.selective_scan_cpu_with_grad, inputs, dy)
    assert y.dtype == torch.float32
    assert [g.dtype for g in grads] == [torch.bfloat16] + [torch.float64] * 5
    # an input that needs no gradient gets none
    A = inputs[2].detach().clone().requires_grad_(True)
    cpu_scan.selective_scan_cpu_with_grad(inputs[0], inputs[1], A, *inputs[3:]).sum().backward()
    assert A.grad is not None and A.grad.dtype == torch.float64
    # the inputs are saved as autograd saves them: changed in place before the backward, an error
    x = inputs[0].float().requires_grad_(True) * 1
    y = cpu_scan.selective_scan_cpu_with_grad(x, *inputs[1:])
    x.add_(1)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        y.sum().backward()


def test_a_training_step_through_the_compiled_scan_equals_one_through_the_chunked_scan(monkeypatch):
    """The same RCPS model, loss and batch: every parameter's gradient agrees."""
    import plantcad_flows.architectures.caduceus.mixers as mixers

    def step(model):
        ids = torch.randint(3, 7, (2, 150), generator=torch.Generator().manual_seed(4))
        labels = torch.where(
            torch.rand(ids.shape, generator=torch.Generator().manual_seed(5)) < 0.3, ids, -100
        )
        logits = model(torch.where(labels >= 0, torch.ones_like(ids), ids))[0]  # [MASK] = 1
        torch.nn.functional.cross_entropy(logits.flatten(0, 1), labels.flatten()).backward()
        return {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}

    model = random_caduceus(caduceus_config(rcps=True))
    model.train()
    compiled = step(model)
    model.zero_grad()
    monkeypatch.setattr(mixers, "selective_scan", lambda *a, overwrite_x=False: selective_scan_chunked(*a))
    chunked = step(model)
    assert compiled.keys() == chunked.keys() and any("A_log" in name for name in compiled)
    for name, g in chunked.items():
        # float32 on either side; differences are accumulation order, ~1e-7 x the largest
        torch.testing.assert_close(compiled[name], g, rtol=1e-4, atol=1e-5 * float(g.abs().max()), msg=name)
        assert float(g.abs().max()) > 0, name


def test_compiled_exp_is_float32_accurate_on_the_scans_range():
    import numpy as np

    xs = np.linspace(-87.0, 0.0, 200_001, dtype=np.float32)
    got = np.array([cpu_scan._exp_nonpositive(v) for v in xs[::97]], dtype=np.float64)
    exact = np.exp(xs[::97].astype(np.float64))
    assert np.max(np.abs(got - exact) / exact) < 2e-7
    assert cpu_scan._exp_nonpositive(np.float32(-500.0)) == pytest.approx(np.exp(-87.0), rel=1e-6)


@pytest.mark.parametrize(
    "version,fused", [("v1", True), ("v1", False), ("v2", True)], ids=["v1-fused", "v1-unfused", "v2-fused"]
)
def test_rcps_model_is_reverse_complement_equivariant(version, fused):
    model = random_caduceus(caduceus_config(rcps=True, version=version, fused_add_norm=fused))
    comp = torch.tensor(model.spec.complement_map)
    ids = torch.randint(3, 7, (2, 70), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        logits = model(ids)[0]
        rc_logits = model(comp[ids.flip(-1)])[0]
    # logits of the reverse complement at i, token v == logits at L-1-i, token complement(v)
    torch.testing.assert_close(rc_logits, logits.flip(1)[..., comp], rtol=0, atol=1e-5)
    assert logits.abs().max() > 0.1  # not a trivially equivariant (constant) model


def test_rcps_strands_batched_or_one_at_a_time_give_the_same_logits(monkeypatch):
    import plantcad_flows.architectures.caduceus.mixers as mixers

    model = random_caduceus(caduceus_config(rcps=True))
    ids = torch.randint(3, 7, (2, 70), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        batched = model(ids)[0]
        monkeypatch.setattr(mixers, "STRANDS_TOGETHER", 0)
        torch.testing.assert_close(model(ids)[0], batched, rtol=1e-6, atol=1e-6)


def test_fused_rcps_norm_reads_the_second_half_as_the_forward_stream():
    """The fused and unfused RCPS blocks hold the same tensors but are different functions;
    a checkpoint trained fused must run fused."""
    fused = random_caduceus(caduceus_config(rcps=True, fused_add_norm=True))
    unfused = random_caduceus(caduceus_config(rcps=True, fused_add_norm=False))
    state = {
        k.replace(".norm.submodule.", ".norm.").replace("norm_f.submodule.", "norm_f."): v
        for k, v in unfused.state_dict().items()
    }
    fused.load_state_dict(state)
    fused.tie_weights()
    ids = torch.randint(3, 7, (1, 40), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert (fused(ids)[0] - unfused(ids)[0]).abs().max() > 1e-3


def test_safetensors_without_tied_tensors_equals_the_full_bin(tmp_path):
    config = caduceus_config(rcps=True)
    model = random_caduceus(config)
    full = save_caduceus(model, config, tmp_path / "bin", fmt="bin")
    slim = save_caduceus(model, config, tmp_path / "st", fmt="safetensors")
    ids = torch.randint(3, 7, (2, 33), generator=torch.Generator().manual_seed(0))
    spec = parse_config(config)
    a, b = load_caduceus(full, spec), load_caduceus(slim, spec)
    with torch.no_grad():
        expected = model(ids)[0]
        torch.testing.assert_close(a(ids)[0], expected, rtol=0, atol=0)
        torch.testing.assert_close(b(ids)[0], expected, rtol=0, atol=0)
    # the ties are made again, not copies
    head = b.lm_head.lm_head.weight
    assert head is b.caduceus.backbone.embeddings.word_embeddings.embedding.weight
    mixer = b.caduceus.backbone.layers[0].mixer.submodule
    assert mixer.mamba_rev.in_proj.weight is mixer.mamba_fwd.in_proj.weight


def test_a_checkpoint_missing_a_norm_tensor_is_an_error(tmp_path):
    from safetensors.torch import load_file, save_file

    config = caduceus_config(rcps=True)
    path = save_caduceus(random_caduceus(config), config, tmp_path / "m", fmt="safetensors")
    state = load_file(str(path / "model.safetensors"))
    del state["caduceus.backbone.layers.1.norm.weight"]
    save_file(state, str(path / "model.safetensors"))
    with pytest.raises(CheckpointError, match=r"caduceus\.backbone\.layers\.1\.norm\.weight: missing"):
        load_caduceus(path, parse_config(config))


def test_unexpected_tensor_and_wrong_complement_map_are_errors(tmp_path):
    config = caduceus_config(rcps=True)
    model = random_caduceus(config)
    state = dict(model.state_dict())
    state["caduceus.backbone.layers.0.mixer.submodule.mamba_fwd.extra"] = torch.zeros(1)
    from plantcad_flows.architectures.caduceus.weights import load_weights

    with pytest.raises(CheckpointError, match="mamba_fwd.extra: in the checkpoint but not"):
        load_weights(random_caduceus(config), state)
    state = dict(model.state_dict())
    state["lm_head.complement_map"] = torch.arange(8)
    with pytest.raises(CheckpointError, match="lm_head.complement_map"):
        load_weights(random_caduceus(config), state)


def test_plantcaduceus_and_plantcad2_configs_parse():
    flat = parse_config(caduceus_config(rcps=True, d_model=1024, n_layer=32))
    assert (flat.mamba.version, flat.mamba.dt_rank, flat.vocab_size) == ("v1", 64, 8)
    assert flat.complement_map == (0, 1, 2, 6, 5, 4, 3, 7)
    nested = parse_config(caduceus_config(version="v2", d_model=768, n_layer=24))
    assert (nested.mamba.version, nested.mamba.nheads, nested.mamba.d_state) == ("v2", 24, 128)


@pytest.mark.parametrize(
    "change,key",
    [
        ({"ssm_cfg": {"d_state": 4, "mystery": 1}}, "ssm_cfg.mystery"),
        ({"bidirectional_strategy": "concat"}, "bidirectional_strategy"),
        ({"complement_map": {"3": 6, "4": 5, "5": 4, "6": 4}}, "complement_map"),
        ({"some_new_switch": True}, "some_new_switch"),
    ],
)
def test_unimplemented_config_is_refused_naming_the_key(change, key):
    config = {**caduceus_config(rcps=True), **change}
    with pytest.raises(UnsupportedConfig) as e:
        parse_config(config)
    assert e.value.key == key and "\n" not in str(e.value)


def test_nested_config_refuses_unimplemented_v2_values():
    config = caduceus_config(version="v2")
    config["layer_cfg"]["mamba_cfg"]["ssm_cfg"]["D_has_hdim"] = True
    with pytest.raises(UnsupportedConfig, match=r"layer_cfg\.mamba_cfg\.ssm_cfg\.D_has_hdim"):
        parse_config(config)
    config = caduceus_config(version="v2")
    config["layer_cfg"]["mamba_cfg"]["version"] = "v3"
    with pytest.raises(UnsupportedConfig, match=r"layer_cfg\.mamba_cfg\.version='v3'"):
        parse_config(config)
