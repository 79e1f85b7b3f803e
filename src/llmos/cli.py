"""The `llmos` command: one verb per user job, each a thin call into its package."""

from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path

from llmos import __version__
from llmos.errors import LlmosError


def _default_name(src: Path) -> str:
    stem = src.stem if src.is_file() else src.name
    return re.sub(r"[^a-z0-9._-]+", "-", stem.lower()).strip("-._") or "model"


def cmd_pull(args: argparse.Namespace) -> int:
    from llmos.library import pull

    path = pull(args.name)
    print(f"pulled {args.name} into {path}", file=sys.stderr)
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    from llmos.checkpoint import import_model
    from llmos.library import ModelName

    src = Path(args.path)
    name = ModelName.parse(args.name or _default_name(src))
    t0 = time.perf_counter()
    dest = import_model(src, name.path(), lineage={"name": str(name)})
    print(f"imported {src} as {name} ({dest}) in {time.perf_counter() - t0:.1f}s", file=sys.stderr)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from llmos.checkpoint import export_hf
    from llmos.library import resolve

    out = export_hf(resolve(args.name), args.out)
    print(f"exported {args.name} to {out} ({args.format})", file=sys.stderr)
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from llmos.library import list_models

    for name, path in list_models():
        size = sum(f.stat().st_size for f in path.iterdir() if f.is_file())
        print(f"{name!s:40} {size / 1e6:9.1f} MB  {path}")
    return 0


def _sampling(args: argparse.Namespace) -> dict:
    return {"max_new_tokens": args.max_new_tokens, "temperature": args.temperature, "top_k": args.top_k,
            "top_p": args.top_p, "seed": args.seed, "stop": args.stop or None}


def _load(args: argparse.Namespace):
    from llmos.engine import LLM

    t0 = time.perf_counter()
    llm = LLM.load(args.model, threads=args.threads, quantize=args.quantize)
    print(f"loaded {args.model} in {time.perf_counter() - t0:.1f}s", file=sys.stderr)
    return llm


def _stream_out(llm, deltas) -> None:
    t0 = time.perf_counter()
    for delta in deltas:
        sys.stdout.write(delta)
        sys.stdout.flush()
    dt = time.perf_counter() - t0
    n = llm.stats.get("completion_tokens", 0)
    print(f"\n[{llm.stats.get('prompt_tokens', 0)} prompt tokens, {n} new tokens, "
          f"{n / dt if dt else 0:.1f} tokens/s]", file=sys.stderr)


def cmd_generate(args: argparse.Namespace) -> int:
    llm = _load(args)
    _stream_out(llm, llm.stream(args.prompt, **_sampling(args)))
    return 0


def cmd_chat(args: argparse.Namespace) -> int:
    llm = _load(args)
    messages = [{"role": "system", "content": args.system}] if args.system else []
    interactive = sys.stdin.isatty()
    if interactive:
        print("Type a message; /reset starts over, /exit quits.", file=sys.stderr)
    while True:
        try:
            line = input(">>> " if interactive else "")
        except EOFError:
            return 0
        if not line.strip():
            continue
        if line.strip() in ("/exit", "/quit", "/bye"):
            return 0
        if line.strip() == "/reset":
            messages = messages[:1] if args.system else []
            continue
        messages.append({"role": "user", "content": line})
        reply: list[str] = []

        def tee(deltas, reply=reply):
            for d in deltas:
                reply.append(d)
                yield d

        _stream_out(llm, tee(llm.chat(messages, stream=True, **_sampling(args))))
        messages.append({"role": "assistant", "content": "".join(reply)})


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="llmos", description="LLM as an OS: pretrain, import, fine-tune, evaluate, "
                                "serve and share open language models on your own machine.")
    p.add_argument("--version", action="version", version=f"llmos {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

    s = sub.add_parser("pull", help="fetch a known model into the library (e.g. smollm2:135m-instruct)")
    s.add_argument("name")
    s.set_defaults(func=cmd_pull)

    s = sub.add_parser("import", help="import a .gguf file or a Hugging Face model folder into the library")
    s.add_argument("path")
    s.add_argument("--name", help="library name[:tag] (default: from the file name)")
    s.set_defaults(func=cmd_import)

    s = sub.add_parser("export", help="write a library model out as a Hugging Face folder")
    s.add_argument("name")
    s.add_argument("out")
    s.add_argument("--format", choices=["hf"], default="hf")
    s.set_defaults(func=cmd_export)

    s = sub.add_parser("list", help="list the models in the library")
    s.set_defaults(func=cmd_list)

    for verb, helptext in (("generate", "continue a prompt (text on stdout, statistics on stderr)"),
                           ("chat", "chat with a model in the terminal, using its chat template")):
        s = sub.add_parser(verb, help=helptext)
        s.add_argument("model", help="library name or path to a model folder / .gguf file")
        if verb == "generate":
            s.add_argument("prompt")
            s.set_defaults(func=cmd_generate)
        else:
            s.add_argument("--system", help="system message")
            s.set_defaults(func=cmd_chat)
        s.add_argument("--max-new-tokens", type=int, default=256 if verb == "chat" else 128)
        s.add_argument("--temperature", type=float, help="0 means greedy (default: the model's generation config)")
        s.add_argument("--top-k", type=int)
        s.add_argument("--top-p", type=float)
        s.add_argument("--seed", type=int)
        s.add_argument("--stop", action="append", help="stop string (repeatable)")
        s.add_argument("--threads", type=int, help="CPU threads for model compute")
        s.add_argument("--quantize", choices=["none", "int8", "int4"], default="none",
                       help="low-bit weights (GGUF Q8_0/Q4_0/Q4_1 blocks load as they are)")

    from llmos.data import add_commands as data_commands
    from llmos.serve.cli import add_commands as serve_commands
    from llmos.train import add_commands as train_commands

    serve_commands(sub)
    data_commands(sub)
    train_commands(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except LlmosError as e:
        print(f"llmos: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
