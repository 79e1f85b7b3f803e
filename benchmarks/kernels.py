"""Linear-layer kernels on SmolLM2-135M's shapes: fp32, bf16, FBGEMM int8, torch's int4/int8
pack kernels and ours (fp32, int8, int4), plus a whole decode step's matmuls.

    python benchmarks/kernels.py                  # the table and the decode-step chain
    python benchmarks/kernels.py --rows 1 --quick # fewer repeats

Timings are medians of interleaved runs in one process (the methods take turns, so a noisy
neighbour on a shared machine hits all of them alike); the min is shown after the slash.
"The chain" runs one decode step's 121 matrices over distinct weights per layer, so the weights
stream from DRAM as in the real model instead of sitting in cache as in the per-shape loop.
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings
from collections.abc import Callable

import torch
import torch.nn.functional as F

from llmos.engine.quant import DenseLinear, QuantLinear, load_kernels

# SmolLM2-135M: (name, out_features, in_features) and how often each runs per token.
SHAPES = [("attn.qkv", 960, 576), ("attn.proj", 576, 576), ("mlp.up", 3072, 576), ("mlp.down", 576, 1536),
          ("head", 49152, 576)]
N_LAYER = 30
METHODS = ["fp32", "bf16", "fbgemm-int8", "aten-int8pack", "aten-int4pack", "ours-fp32", "ours-int8", "ours-int4"]


def make(method: str, w: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    """A callable x -> x @ w.T for one method, weights prepared once."""
    N, K = w.shape
    if method == "fp32":
        return lambda x: F.linear(x, w)
    if method == "bf16":
        wb = w.bfloat16()
        return lambda x: F.linear(x.bfloat16(), wb)
    if method == "fbgemm-int8":
        layer = torch.ao.nn.quantized.dynamic.Linear(K, N, bias_=False)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            scale = w.abs().amax(1).clamp(min=1e-8) / 127
            layer.set_weight_bias(torch.quantize_per_channel(w, scale, torch.zeros(N, dtype=torch.long), 0, torch.qint8), None)
        return layer
    if method == "aten-int8pack":
        scale = w.abs().amax(1).clamp(min=1e-8) / 127
        q = torch.round(w / scale[:, None]).to(torch.int8)
        return lambda x: torch.ops.aten._weight_int8pack_mm(x, q, scale)
    if method == "aten-int4pack":
        g = w.view(N, K // 32, 32)
        lo, hi = g.amin(-1), g.amax(-1)
        scale = ((hi - lo) / 15).clamp(min=1e-8)
        q = torch.round((g - lo[..., None]) / scale[..., None]).clamp(0, 15).to(torch.int32).view(N, K)
        packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(q, 2)
        # torch's int4 zero point is the value at q = 8: w = (q - 8) * scale + zero.
        sz = torch.stack([scale, lo + 8 * scale], dim=-1).transpose(0, 1).contiguous()
        return lambda x: torch.ops.aten._weight_int4pack_mm_for_cpu(x, packed, 32, sz)
    if method == "ours-fp32":
        return DenseLinear(w)
    if method in ("ours-int8", "ours-int4"):
        return QuantLinear.from_float(w, None, method.removeprefix("ours-"))
    raise ValueError(method)


def interleaved(fns: dict[str, Callable[[], object]], repeat: int) -> dict[str, tuple[float, float]]:
    """(median, min) seconds per call of each function, taking turns call by call."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    for f in fns.values():  # warm-up: first-call allocations, lazy init
        f()
    for _ in range(repeat):
        for k, f in fns.items():
            t = time.perf_counter()
            f()
            times[k].append(time.perf_counter() - t)
    return {k: (statistics.median(v), min(v)) for k, v in times.items()}


def fmt(seconds: float) -> str:
    us = seconds * 1e6
    return f"{us / 1000:.2f}ms" if us >= 10000 else f"{us:.0f}"


def shape_table(rows: list[int], methods: list[str], repeat: int) -> dict[tuple[str, int], dict[str, float]]:
    print(f"\nper call, us (median/min); ratio = fp32 median / method median; {torch.get_num_threads()} threads")
    print(f"{'shape':24} {'M':>4} " + " ".join(f"{m:>19}" for m in methods))
    medians: dict[tuple[str, int], dict[str, float]] = {}
    for M in rows:
        for name, N, K in SHAPES:
            w = torch.randn(N, K) * 0.02
            x = torch.randn(M, K)
            layers = {m: make(m, w) for m in methods}
            n = max(5, repeat // (20 if N * K * M > 10_000_000 else 1))
            res = interleaved({m: (lambda f=f, x=x: f(x)) for m, f in layers.items()}, n)
            base = res["fp32"][0] if "fp32" in res else None
            cells = []
            for m in methods:
                med, lo = res[m]
                ratio = f" {base / med:4.1f}x" if base else ""
                cells.append(f"{fmt(med)}/{fmt(lo)}{ratio}".rjust(19))
            print(f"{name + f' {N}x{K}':24} {M:>4} " + " ".join(cells))
            medians[(name, M)] = {m: res[m][0] for m in methods}
    return medians


def step_estimate(medians: dict[tuple[str, int], dict[str, float]], rows: list[int], methods: list[str]) -> None:
    print("\ndecode step estimate from the table (30 x 4 layer matrices + head; in-cache timings)")
    for M in rows:
        if ("head", M) not in medians:
            continue
        cells = []
        for m in methods:
            total = sum(medians[(name, M)][m] * (1 if name == "head" else N_LAYER) for name, _, _ in SHAPES)
            cells.append(f"{m} {total * 1e3:.2f}ms")
        print(f"  M={M}: " + ", ".join(cells))


def chain(methods: list[str], M: int, repeat: int) -> None:
    """One decode step's matrices with distinct weights per layer (DRAM-resident, as in the model)."""
    print(f"\nthe chain, M={M}: ms per decode step's matmuls (median/min), {torch.get_num_threads()} threads")
    torch.manual_seed(0)
    weights = [(torch.randn(N, K) * 0.02) for _ in range(N_LAYER) for _, N, K in SHAPES[:4]]
    weights.append(torch.randn(SHAPES[4][1], SHAPES[4][2]) * 0.02)
    xs = {576: torch.randn(M, 576), 1536: torch.randn(M, 1536)}
    layers = {m: [make(m, w) for w in weights] for m in methods}
    # int4 as the engine runs it: int4 layers, the head (GGUF's Q8_0) in int8.
    if "ours-int4" in layers and "ours-int8" in layers:
        layers["ours-int4+int8-head"] = layers["ours-int4"][:-1] + layers["ours-int8"][-1:]
    del weights
    Ks = [K for _ in range(N_LAYER) for _, _, K in SHAPES[:4]] + [576]

    def step(fs: list) -> Callable[[], None]:
        return lambda: [f(xs[K]) for f, K in zip(fs, Ks)]

    res = interleaved({m: step(fs) for m, fs in layers.items()}, repeat)
    for m, (med, lo) in res.items():
        print(f"  {m:22} {med * 1e3:7.2f} / {lo * 1e3:7.2f} ms   ({M / med:6.1f} tok/s matmuls only)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rows", type=int, nargs="*", default=[1, 8, 512], help="activation rows M")
    p.add_argument("--methods", nargs="*", default=METHODS)
    p.add_argument("--repeat", type=int, default=200)
    p.add_argument("--quick", action="store_true", help="repeat 40, skip the chain")
    p.add_argument("--no-chain", action="store_true")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    repeat = 40 if args.quick else args.repeat
    t = time.perf_counter()
    kernel = load_kernels()
    print(f"our kernel: {kernel or 'PyTorch fallback'} (loaded/built in {time.perf_counter() - t:.1f}s; "
          "LLMOS_QUANT_ISA=avx2 forces AVX2, LLMOS_QUANT_KERNEL=torch the fallback)")
    with torch.inference_mode():
        medians = shape_table(args.rows, args.methods, repeat)
        step_estimate(medians, [m for m in args.rows if m <= 32], args.methods)
        if not (args.quick or args.no_chain):
            chain([m for m in args.methods if m not in ("bf16", "aten-int8pack", "aten-int4pack")], 1, 20)
            if 8 in args.rows:
                chain([m for m in args.methods if m in ("fp32", "fbgemm-int8", "ours-fp32", "ours-int8", "ours-int4")],
                      8, 10)


if __name__ == "__main__":
    main()
