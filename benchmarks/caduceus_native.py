"""The native Caduceus on this machine's CPU: sequences/s and peak memory at real sizes.

For PlantCaduceus_l32 (Mamba v1, RCPS: 32 layers, d_model 1024, d_state 16, expand 2) and
PlantCAD2-Small (Mamba v2 defaults: 24 layers, d_model 768, d_state 128, headdim 64; RCPS assumed,
which doubles the mixer work, so this is its upper bound) with random weights, at 512 and
8,192 bp, it prints:
* the scan alone, one mixer call's worth (one strand, one direction): ours (the compiled CPU scan
  for v1, the chunked SSD for v2) against the plain sequential scan (the tests' reference);
* the whole model: sequences/s with our scans and with the sequential one;
* the peak RSS of the process that loaded the model from a checkpoint (safetensors, written once
  to a temporary directory, read through `weights.load_caduceus` as a user's model is) and ran
  one forward;
* the model's matmul FLOPs per sequence, and what fraction of this machine's measured fp32
  matmul throughput the forward reaches (the matmuls alone would take 1/that of the time: a
  scan cannot make the model faster than that).

To keep the run short on a small machine, the forward is timed on the first few layers and
scaled to the full depth (the layers are identical in cost; embedding and head are negligible),
with the weights of every layer resident, so the peak RSS is the full model's; the output says
how many layers were timed. Each measurement runs in its own process so its peak RSS is its own.
`--threads` sets torch's (and the compiled scan's) threads in every measurement. Benchmarks
print, never assert.

    .venv/bin/python benchmarks/caduceus_native.py [--lengths 512 8192] [--models l32 small] [--threads N]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

COMPLEMENT = {"0": 0, "1": 1, "2": 2, "3": 6, "4": 5, "5": 4, "6": 3, "7": 7}
MODELS = {
    "l32": (
        "PlantCaduceus_l32",
        {
            "model_type": "caduceus",
            "d_model": 1024,
            "n_layer": 32,
            "vocab_size": 8,
            "ssm_cfg": {"d_state": 16, "d_conv": 4, "expand": 2, "dt_rank": "auto"},
            "rms_norm": True,
            "fused_add_norm": True,
            "residual_in_fp32": True,
            "rcps": True,
            "complement_map": COMPLEMENT,
        },
    ),
    "small": (
        "PlantCAD2-Small-l24-d0768",
        {
            "model_type": "caduceus",
            "d_model": 768,
            "n_layer": 24,
            "vocab_size": 8,
            "layer_cfg": {"mamba_cfg": {"version": "v2", "ssm_cfg": {}}},
            "norm_cfg": {"fused_add_norm": True, "rms_norm": True},
            "residual_in_fp32": True,
            "rcps": True,
            "complement_map": COMPLEMENT,
        },
    ),
}


def matmul_gflops(size: int = 2048, reps: int = 5) -> float:
    """This machine's fp32 matmul throughput (best of `reps`), GFLOP/s."""
    import torch

    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 2 * size**3 / best / 1e9


def write_checkpoint(model_key: str, directory: Path) -> Path:
    """Random weights of `model_key` saved as a user's checkpoint is (config.json + safetensors)."""
    import torch

    from plantcad_flows.architectures.caduceus import parse_config
    from plantcad_flows.architectures.caduceus.model import CaduceusForMaskedLM
    from plantcad_flows.architectures.caduceus.weights import save_checkpoint

    config = MODELS[model_key][1]
    torch.manual_seed(0)
    return save_checkpoint(CaduceusForMaskedLM(parse_config(config)), config, directory / model_key)


def scan_inputs(spec, length: int):
    """Random inputs of one mixer call's scan at this model's sizes (one sequence)."""
    import torch

    m, gen = spec.mamba, torch.Generator().manual_seed(0)
    if m.version == "v1":
        x = torch.randn(1, length, m.d_inner, generator=gen)
        dt = torch.nn.functional.softplus(torch.randn(1, length, m.d_inner, generator=gen) - 4)
        A = -torch.exp(torch.log(torch.arange(1, m.d_state + 1.0)).repeat(m.d_inner, 1))
        B, C = (torch.randn(1, length, m.d_state, generator=gen) for _ in range(2))
        return x, dt, A, B, C, torch.ones(m.d_inner)
    x = torch.randn(1, length, m.nheads, m.headdim, generator=gen)
    dt = torch.nn.functional.softplus(torch.randn(1, length, m.nheads, generator=gen) - 4)
    B, C = (torch.randn(1, length, m.ngroups, m.d_state, generator=gen) for _ in range(2))
    return x, dt, -torch.linspace(1, 16, m.nheads), B, C, torch.ones(m.nheads)


def run_scan(model_key: str, length: int, reference: bool, threads: int) -> dict:
    """In this process: time one mixer call's scan (best of 3; the sequential one once)."""
    import torch

    from plantcad_flows.architectures.caduceus import parse_config
    from plantcad_flows.architectures.caduceus.scan import (
        selective_scan,
        selective_scan_reference,
        ssd_scan,
        ssd_scan_reference,
    )

    torch.set_num_threads(threads)
    spec = parse_config(MODELS[model_key][1])
    args = scan_inputs(spec, length)
    if spec.mamba.version == "v1":
        fn = selective_scan_reference if reference else selective_scan
    else:
        chunk = spec.mamba.chunk_size
        fn = ssd_scan_reference if reference else (lambda *a: ssd_scan(*a, chunk))
    times = []
    with torch.inference_mode():
        if not reference:  # the compiled scan loads (or compiles) once per process: not timed
            fn(*(a[:, :16] if a.dim() > 2 else a for a in args))
        for _ in range(1 if reference else 3):
            t = time.perf_counter()
            fn(*args)
            times.append(time.perf_counter() - t)
    return {"seconds": min(times)}


def run_one(
    model_key: str, length: int, batch: int, layers: int, reference: bool, reps: int, threads: int, ckpt: str
) -> dict:
    """In this process: load the model from `ckpt`, time `reps` forwards on the first `layers`
    layers."""
    import torch
    from torch import nn

    import plantcad_flows.architectures.caduceus.mixers as mixers
    from plantcad_flows.architectures.caduceus import parse_config
    from plantcad_flows.architectures.caduceus.scan import selective_scan_reference, ssd_scan_reference
    from plantcad_flows.architectures.caduceus.weights import load_caduceus

    torch.set_num_threads(threads)
    if reference:
        mixers.selective_scan = lambda *a, overwrite_x=False: selective_scan_reference(*a)
        mixers.ssd_scan = lambda x, dt, A, B, C, D, chunk: ssd_scan_reference(x, dt, A, B, C, D)
    model = load_caduceus(ckpt, parse_config(MODELS[model_key][1]))
    with torch.no_grad():  # every weight in memory, as a full-depth forward would have it
        sum(float(p.sum()) for p in model.parameters())
    all_layers = model.caduceus.backbone.layers
    model.caduceus.backbone.layers = nn.ModuleList(list(all_layers)[:layers])  # the rest stay resident
    flops = [0]

    def count(module, inputs, output):
        tokens = inputs[0].numel() // inputs[0].shape[-1]
        if isinstance(module, mixers.Mamba):  # its in_proj runs as two F.linear halves, no hook
            flops[0] += 2 * tokens * module.in_proj.in_features * module.in_proj.out_features
        elif isinstance(module, nn.Linear):
            flops[0] += 2 * tokens * module.in_features * module.out_features
        else:  # depthwise conv
            flops[0] += 2 * output.numel() * module.kernel_size[0]

    for m in model.modules():
        if isinstance(m, (nn.Linear, nn.Conv1d, mixers.Mamba)):
            m.register_forward_hook(count)
    ids = torch.randint(3, 7, (batch, length))
    times = []
    with torch.inference_mode():
        if not reference:
            model(ids[:, :64])  # the compiled scan loads (or compiles) once per process
        for _ in range(reps):
            flops[0] = 0
            t = time.perf_counter()
            model(ids)
            times.append(time.perf_counter() - t)
    return {"seconds": min(times), "flops": flops[0], "all_layers": len(all_layers)}


def measure(*args) -> dict:
    """`run_one(*args)` (or `run_scan` for 4 arguments) in a child process; its own peak RSS
    from the kernel (wait4)."""
    cmd = [sys.executable, __file__, "--one", *map(str, args)]
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)}
    )
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise SystemExit(f"measurement failed: {' '.join(cmd)}")
    result = json.loads(out.strip().splitlines()[-1])
    result["peak_rss_gb"] = usage.ru_maxrss / 2**20  # KiB on Linux
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=["l32", "small"], choices=sorted(MODELS))
    parser.add_argument("--lengths", nargs="+", type=int, default=[512, 8192])
    parser.add_argument("--batch-512", type=int, default=1, help="sequences per forward at <= 1 kb")
    parser.add_argument("--layers", type=int, default=4, help="layers timed (ours), scaled to the full depth")
    parser.add_argument("--ref-layers", type=int, default=1, help="layers timed for the sequential reference")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--one", nargs="+", help=argparse.SUPPRESS)
    parser.add_argument("--write", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.write:
        write_checkpoint(args.write[0], Path(args.write[1]))
        return
    if args.one:
        key, length, *rest = args.one
        if len(rest) == 2:  # the scan alone
            print(json.dumps(run_scan(key, int(length), bool(int(rest[0])), int(rest[1]))))
            return
        batch, layers, reference, reps, threads, ckpt = rest
        print(
            json.dumps(
                run_one(
                    key,
                    int(length),
                    int(batch),
                    int(layers),
                    bool(int(reference)),
                    int(reps),
                    int(threads),
                    ckpt,
                )
            )
        )
        return

    import torch

    threads = args.threads or torch.get_num_threads()
    torch.set_num_threads(threads)
    gflops = matmul_gflops()
    print(f"host: {os.cpu_count()} CPUs, torch {torch.__version__}, {threads} threads")
    print(f"fp32 matmul throughput (2048^3, best of 5): {gflops:.1f} GFLOP/s", flush=True)
    with tempfile.TemporaryDirectory(prefix="caduceus-bench-") as tmp:
        for key in args.models:
            name, config = MODELS[key]
            n_layer = config["n_layer"]
            # in a child: a child's peak RSS starts from its parent's (fork/exec), so this one stays small
            ckpt = Path(tmp) / key
            subprocess.run(
                [sys.executable, __file__, "--write", key, tmp],
                check=True,
                env={**os.environ, "PYTHONPATH": str(ROOT)},
            )
            for length in args.lengths:
                scan_ours = measure(key, length, 0, threads)["seconds"]
                scan_ref = measure(key, length, 1, threads)["seconds"]
                print(
                    f"{name} {length:>5} bp, scan alone (one strand, one direction): ours {scan_ours:.3f} s, "
                    f"sequential {scan_ref:.3f} s, speed-up {scan_ref / scan_ours:.1f}x",
                    flush=True,
                )
                long = length > 1024
                batch = 1 if long else args.batch_512
                ours_layers = min(args.layers, n_layer)
                ref_layers = min(args.ref_layers, n_layer)
                ours = measure(key, length, batch, ours_layers, 0, 1 if long else 2, threads, ckpt)
                ref = measure(key, length, batch, ref_layers, 1, 1, threads, ckpt)
                scale_ours, scale_ref = n_layer / ours_layers, n_layer / ref_layers
                t_ours, t_ref = ours["seconds"] * scale_ours, ref["seconds"] * scale_ref
                flops = ours["flops"] * scale_ours / batch
                print(
                    f"{name} {length:>5} bp, whole model, batch {batch}: ours {batch / t_ours:.4f} seq/s "
                    f"({t_ours / batch:.2f} s/seq; timed on {ours_layers}/{n_layer} layers, scaled), "
                    f"peak RSS {ours['peak_rss_gb']:.2f} GiB (checkpoint loaded + one forward) | "
                    f"sequential reference {batch / t_ref:.4f} seq/s ({t_ref / batch:.2f} s/seq; timed on "
                    f"{ref_layers}/{n_layer} layers, scaled), peak RSS {ref['peak_rss_gb']:.2f} GiB | "
                    f"speed-up {t_ref / t_ours:.1f}x | {flops / 1e9:.0f} GFLOP/seq of matmuls = "
                    f"{flops / (t_ours / batch) / 1e9 / gflops:.0%} of matmul throughput",
                    flush=True,
                )


if __name__ == "__main__":
    main()
