"""Pretraining benchmark: nanoGPT's "baby GPT" on character-level tiny Shakespeare, on CPU.

Runs, each in its own process (so peak RSS is its own):
  reference  nanoGPT's published setting as a plain loop written here from its hyperparameters
             (learned positions, bias-free LayerNorm, exact GELU, tied embeddings, SDPA attention;
             batch 12 x 64, AdamW lr 1e-3 betas (0.9, 0.99) wd 0.1, warmup 100, cosine to 1e-4 at
             2000, clip 1.0; random batches from the first 90%; eval every 250 iters on 20 batches)
  ours       `llmos pretrain --config shakespeare-char` (the identical config)
  fast       `llmos pretrain --config shakespeare-char-fast` (our CPU recipe for the same wall budget)

and prints val loss at the end (each loop's own 20-batch estimate, plus the loss on the whole val
split, the same measure for all), ms/iteration, training tokens/s, wall time and peak RSS, with
ratios against the reference.

    python benchmarks/pretrain_shakespeare.py                 # all three, ~8 minutes on 2 cores
    python benchmarks/pretrain_shakespeare.py --only ours --iters 200   # a quick probe
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

REPO = Path(__file__).resolve().parents[1]
TEXT = REPO.parent / "shared" / "data" / "tinyshakespeare.txt"


# --- the reference: nanoGPT's model and loop, reproduced from the published setting ---------------

class RefBlock(nn.Module):
    def __init__(self, d: int, h: int) -> None:
        super().__init__()
        self.h = h
        self.ln_1 = nn.LayerNorm(d, bias=False)
        self.c_attn = nn.Linear(d, 3 * d, bias=False)
        self.attn_proj = nn.Linear(d, d, bias=False)
        self.ln_2 = nn.LayerNorm(d, bias=False)
        self.c_fc = nn.Linear(d, 4 * d, bias=False)
        self.mlp_proj = nn.Linear(4 * d, d, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.c_attn(self.ln_1(x)).split(C, dim=2)
        q, k, v = (t.view(B, T, self.h, C // self.h).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.attn_proj(y.transpose(1, 2).contiguous().view(B, T, C))
        return x + self.mlp_proj(F.gelu(self.c_fc(self.ln_2(x))))  # exact GELU, as nanoGPT


class RefGPT(nn.Module):
    def __init__(self, vocab: int, block: int, n_layer: int, n_head: int, d: int) -> None:
        super().__init__()
        self.wte, self.wpe = nn.Embedding(vocab, d), nn.Embedding(block, d)
        self.h = nn.ModuleList(RefBlock(d, n_head) for _ in range(n_layer))
        self.ln_f = nn.LayerNorm(d, bias=False)
        self.lm_head = nn.Linear(d, vocab, bias=False)
        self.lm_head.weight = self.wte.weight  # tied
        for name, p in self.named_parameters():
            if p.dim() >= 2:
                std = 0.02 / math.sqrt(2 * n_layer) if name.endswith("proj.weight") else 0.02
                nn.init.normal_(p, 0.0, std)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        x = self.wte(idx) + self.wpe(torch.arange(idx.shape[1]))
        for block in self.h:
            x = block(x)
        logits = self.lm_head(self.ln_f(x))
        return F.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-1)


def run_reference(iters: int, workdir: Path) -> dict:
    text = TEXT.read_text()
    chars = sorted(set(text))
    stoi = {c: i for i, c in enumerate(chars)}
    data = np.array([stoi[c] for c in text], dtype=np.uint16)
    n = len(data)
    (workdir / "train.bin").write_bytes(data[:int(n * 0.9)].tobytes())
    (workdir / "val.bin").write_bytes(data[int(n * 0.9):].tobytes())
    batch, block, lr, min_lr, warmup, decay_iters = 12, 64, 1e-3, 1e-4, 100, 2000
    eval_interval, eval_iters = 250, 20

    def get_batch(split: str) -> tuple[torch.Tensor, torch.Tensor]:
        d = np.memmap(workdir / f"{split}.bin", dtype=np.uint16, mode="r")  # re-opened per batch, as nanoGPT
        ix = torch.randint(len(d) - block, (batch,))
        x = torch.stack([torch.from_numpy(d[i:i + block].astype(np.int64)) for i in ix])
        y = torch.stack([torch.from_numpy(d[i + 1:i + 1 + block].astype(np.int64)) for i in ix])
        return x, y

    def get_lr(it: int) -> float:
        if it < warmup:
            return lr * (it + 1) / (warmup + 1)
        if it > decay_iters:
            return min_lr
        ratio = (it - warmup) / (decay_iters - warmup)
        return min_lr + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (lr - min_lr)

    torch.manual_seed(1337)
    model = RefGPT(len(chars), block, 4, 4, 128)
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": 0.1},
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
    opt = torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.99))  # fused only on CUDA in nanoGPT

    @torch.no_grad()
    def estimate_loss() -> dict[str, float]:
        model.eval()
        out = {s: float(torch.stack([model(*get_batch(s)) for _ in range(eval_iters)]).mean()) for s in ("train", "val")}
        model.train()
        return out

    t_start = time.perf_counter()
    train_time, last_val = 0.0, math.nan
    x, y = get_batch("train")
    for it in range(iters + 1):  # nanoGPT evaluates at iter_num == max_iters, then steps once more and stops
        for g in opt.param_groups:
            g["lr"] = get_lr(it)
        if it % eval_interval == 0 or it == iters:
            losses = estimate_loss()
            last_val = losses["val"]
            print(f"reference step {it}: train {losses['train']:.4f} val {losses['val']:.4f}", file=sys.stderr)
        if it == iters:
            break
        t0 = time.perf_counter()
        loss = model(x, y)
        x, y = get_batch("train")
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        loss.item()  # nanoGPT logs every iteration on CPU (log_interval 1)
        train_time += time.perf_counter() - t0
    wall = time.perf_counter() - t_start
    val = np.fromfile(workdir / "val.bin", dtype=np.uint16).astype(np.int64)
    full = full_val_loss(lambda xb, yb: model(xb, yb), val, block)
    return {"iters": iters, "val_loss": last_val, "full_val_loss": full, "ms_per_iter": 1000 * train_time / iters,
            "tokens_per_s": iters * batch * block / train_time, "wall_s": wall}


@torch.no_grad()
def full_val_loss(loss_fn, val: np.ndarray, block: int, batch: int = 64) -> float:
    """Mean loss over every non-overlapping window of the val split: the same yardstick for all runs."""
    starts = np.arange(0, len(val) - block - 1, block)
    total, count = 0.0, 0
    for i in range(0, len(starts), batch):
        idx = starts[i:i + batch, None] + np.arange(block + 1)
        rows = torch.from_numpy(val[idx])
        total += float(loss_fn(rows[:, :-1], rows[:, 1:])) * len(idx)
        count += len(idx)
    return total / count


# --- ours ---------------------------------------------------------------------------------------

def run_ours(config: str, iters: int | None, workdir: Path) -> dict:
    os.environ["LLMOS_HOME"] = str(workdir / "home")
    from llmos.data import TokenData, prepare
    from llmos.train import load_config, pretrain

    prepare([TEXT], "char", workdir / "data")
    overrides = {"data.path": str(workdir / "data"), "system.threads": str(torch.get_num_threads())}
    if iters is not None:
        overrides |= {"train.max_iters": str(iters)}
    cfg = load_config(config, overrides)
    t0 = time.perf_counter()
    result = pretrain(cfg, out_dir=str(workdir / "run"))
    wall = time.perf_counter() - t0
    from llmos.checkpoint import load_pretrained

    model = load_pretrained(result.model_dir).model
    val = np.asarray(TokenData(workdir / "data").val.read(0, len(TokenData(workdir / "data").val)), dtype=np.int64)
    block = model.config.block_size
    full = full_val_loss(lambda xb, yb: F.cross_entropy(model(xb).flatten(0, 1), yb.flatten()), val, block)
    s = result.state
    tokens_per_iter = cfg.train.batch_size * cfg.train.gradient_accumulation_steps * block
    return {"iters": s.step, "val_loss": s.last_val_loss, "full_val_loss": full,
            "ms_per_iter": 1000 * s.train_time / s.step, "tokens_per_s": s.step * tokens_per_iter / s.train_time,
            "wall_s": wall}


def child(which: str, iters: int | None, threads: int | None) -> None:
    if threads:
        torch.set_num_threads(threads)
    with tempfile.TemporaryDirectory() as tmp:
        if which == "reference":
            out = run_reference(iters or 2000, Path(tmp))
        else:
            out = run_ours({"ours": "shakespeare-char", "fast": "shakespeare-char-fast"}[which], iters, Path(tmp))
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out["threads"] = torch.get_num_threads()
    print("RESULT " + json.dumps(out))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", action="append", choices=["reference", "ours", "fast"])
    p.add_argument("--iters", type=int, help="override max_iters (quick probes; the goals assume 2000)")
    p.add_argument("--threads", type=int, help="torch threads for every run (default: torch's own choice)")
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(args.child, args.iters, args.threads)
        return
    results = {}
    for which in args.only or ["reference", "ours", "fast"]:
        cmd = [sys.executable, __file__, "--child", which] + (["--iters", str(args.iters)] if args.iters else []) \
            + (["--threads", str(args.threads)] if args.threads else [])
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO / "src")})
        if proc.returncode != 0:
            sys.exit(f"{which} failed:\n{proc.stderr[-3000:]}")
        line = next(x for x in proc.stdout.splitlines() if x.startswith("RESULT "))
        results[which] = json.loads(line.removeprefix("RESULT ")) | {"process_s": time.perf_counter() - t0}
        print(f"{which}: {results[which]}", file=sys.stderr)

    ref = results.get("reference")
    print(f"\n{'run':10} {'iters':>6} {'val loss':>9} {'full val':>9} {'ms/iter':>8} {'tok/s':>8} {'x ref':>6} "
          f"{'wall s':>7} {'RSS MB':>7}")
    for which, r in results.items():
        ratio = f"{r['tokens_per_s'] / ref['tokens_per_s']:.2f}" if ref else "-"
        print(f"{which:10} {r['iters']:>6} {r['val_loss']:>9.4f} {r['full_val_loss']:>9.4f} {r['ms_per_iter']:>8.1f} "
              f"{r['tokens_per_s']:>8,.0f} {ratio:>6} {r['wall_s']:>7.1f} {r['peak_rss_mb']:>7.0f}")


if __name__ == "__main__":
    main()
