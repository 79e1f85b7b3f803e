"""The low-bit matmul kernels: our C++ extension where the CPU and compiler allow, else PyTorch.

The extension (csrc/llmos_quant.cpp) is compiled on first use with the system C++ compiler and
cached under $LLMOS_HOME/cache/ext, keyed by the source, torch version, compiler and flags, so
later processes only load it (~10 ms). We call the compiler directly instead of through
`torch.utils.cpp_extension.load`: one translation unit needs no ninja, and registering the ops
with TORCH_LIBRARY (no pybind11) keeps the build to ~12 s.

It needs x86-64 with AVX2, FMA and F16C, and uses AVX512-VNNI where the CPU has it
(LLMOS_QUANT_ISA=avx2 forces AVX2). Anywhere else (or with LLMOS_QUANT_KERNEL=torch, or if the
build fails) every op falls back to the PyTorch code below, which computes the same dequantized
weights; only the kernels' int8 rounding of the activations differs.
"""

from __future__ import annotations

import hashlib
import logging
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from functools import cache
from pathlib import Path

import torch
import torch.nn.functional as F

log = logging.getLogger(__name__)

QK = 32  # elements per block, in every format
_CSRC = Path(__file__).resolve().parents[4] / "csrc"
_SOURCE = _CSRC / "llmos_quant.cpp"
_SOURCES = (_SOURCE, _CSRC / "llmos_quant_kernels.inc")  # all of them feed the cache key
_ISA_FLAGS = ("avx2", "fma", "f16c")
# -ffp-contract=off: dequantization must stay d * q + m in two roundings, as gguf computes it
# (the kernels' FMAs are explicit intrinsics, unaffected).
_CXXFLAGS = ["-O3", "-std=c++20", "-fPIC", "-shared", "-fopenmp", "-mavx2", "-mfma", "-mf16c", "-ffp-contract=off",
             "-DNDEBUG", "-w"]


def cpu_flags() -> set[str]:
    """The CPU's feature flags as Linux reports them (empty where /proc/cpuinfo is missing)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def _cache_dir() -> Path:
    from llmos.library.store import cache_dir

    return cache_dir() / "ext"


def _build(source: Path, compiler: str) -> Path:
    """Compile the extension once per (source, torch, compiler, flags); return the .so path."""
    from torch.utils.cpp_extension import include_paths, library_paths

    lib_dir = library_paths()[0]
    version = subprocess.run([compiler, "--version"], capture_output=True, text=True, check=False).stdout
    flags = [*_CXXFLAGS, f"-D_GLIBCXX_USE_CXX11_ABI={int(torch._C._GLIBCXX_USE_CXX11_ABI)}"]
    key = hashlib.sha256(b"\0".join([*(s.read_bytes() for s in _SOURCES), torch.__version__.encode(), version.encode(),
                                     " ".join(flags).encode(), lib_dir.encode()])).hexdigest()[:16]
    out = _cache_dir() / f"llmos_quant-{key}.so"
    if out.exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    cmd = [compiler, *flags, *(f"-I{p}" for p in include_paths()), str(source),
           f"-L{lib_dir}", "-lc10", "-ltorch_cpu", f"-Wl,-rpath,{lib_dir}"]
    log.warning("building the quantized-matmul kernels (once, ~12 s): %s", out)
    # Build into a private name and rename: concurrent first runs never load a half-written file.
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=out.parent)
    os.close(fd)
    try:
        done = subprocess.run([*cmd, "-o", tmp], capture_output=True, text=True, timeout=600, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"compiler failed: {done.stderr.strip()[-2000:]}")
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return out


def _register_fakes() -> None:
    """Shape functions, so torch.compile can trace through the ops."""
    def linear(x: torch.Tensor, qs: torch.Tensor, d: torch.Tensor, m: torch.Tensor | None,
               bias: torch.Tensor | None, max_rows: int) -> torch.Tensor:
        return x.new_empty(*x.shape[:-1], qs.shape[0])

    def dequant(qs: torch.Tensor, d: torch.Tensor, m: torch.Tensor | None) -> torch.Tensor:
        return d.new_empty(d.shape[0], d.shape[1] * QK, dtype=torch.float32)

    def dense(x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor | None, max_rows: int) -> torch.Tensor:
        return x.new_empty(*x.shape[:-1], w.shape[0])

    torch.library.register_fake("llmos_quant::linear")(linear)
    torch.library.register_fake("llmos_quant::dense")(dense)
    torch.library.register_fake("llmos_quant::dequantize")(dequant)


@cache
def load() -> str | None:
    """Load (building if needed) the C++ kernels; returns the family in use ("avx512-vnni" or
    "avx2"), or None for the PyTorch fallback.

    Decided once per process, at the first quantized layer."""
    why = None
    if os.environ.get("LLMOS_QUANT_KERNEL", "auto").lower() == "torch":
        why = "LLMOS_QUANT_KERNEL=torch"
    elif platform.machine().lower() not in ("x86_64", "amd64") or not sys.platform.startswith("linux"):
        why = f"no kernel for {sys.platform}/{platform.machine()}"
    elif missing := [f for f in _ISA_FLAGS if f not in cpu_flags()]:
        why = f"CPU lacks {', '.join(missing)}"
    elif not all(s.is_file() for s in _SOURCES):
        why = f"kernel sources are missing from {_CSRC}"
    elif (compiler := shutil.which(os.environ.get("CXX", "c++"))) is None:
        why = "no C++ compiler (set CXX)"
    if why is None:
        try:
            torch.ops.load_library(str(_build(_SOURCE, compiler)))
            _register_fakes()
            # The extension starts on the best family the CPU has; AVX2 can be forced (tests, A/B).
            want = 0 if os.environ.get("LLMOS_QUANT_ISA", "").lower() == "avx2" else 1
            return "avx512-vnni" if torch.ops.llmos_quant.set_isa(want) else "avx2"
        except Exception as e:  # any build/load failure leaves the correct, slower path
            why = f"kernel build failed: {e}"
    log.warning("quantized layers use the PyTorch fallback (%s)", why)
    return None


# --- PyTorch reference/fallback implementations -------------------------------------------


def _f16(t: torch.Tensor) -> torch.Tensor:
    """fp32 values of fp16 scales, stored as fp16 or as their int16 bits (QuantLinear)."""
    return (t.view(torch.float16) if t.dtype == torch.int16 else t).float()


def dequantize_q4(qs: torch.Tensor, d: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """[N, K/2] nibbles + [N, K/32] fp16 scales/offsets -> fp32 [N, K], computed as d * q + m
    like gguf.quants (so GGUF Q4_0/Q4_1 blocks give bit-identical values)."""
    N, nb = d.shape
    qb = qs.view(N, nb, QK // 2)
    q = torch.cat((qb & 0x0F, qb >> 4), dim=-1).float()
    return (_f16(d)[..., None] * q + _f16(m)[..., None]).view(N, nb * QK)


def dequantize_q8(qs: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    N, nb = d.shape
    return (qs.view(N, nb, QK).float() * _f16(d)[..., None]).view(N, nb * QK)


def dequantize(fmt: str, qs: torch.Tensor, d: torch.Tensor, m: torch.Tensor | None) -> torch.Tensor:
    """The fp32 weight of a q4/q8 layer: the extension's multi-threaded loop when loaded."""
    if load() and qs.device.type == "cpu" and d.dtype == torch.int16:
        return torch.ops.llmos_quant.dequantize(qs, d, m)
    return dequantize_q4(qs, d, m) if fmt == "q4" else dequantize_q8(qs, d)


def reference_linear(fmt: str, x: torch.Tensor, qs: torch.Tensor, d: torch.Tensor, m: torch.Tensor | None,
                     bias: torch.Tensor | None) -> torch.Tensor:
    return F.linear(x, dequantize_q4(qs, d, m) if fmt == "q4" else dequantize_q8(qs, d), bias)
