"""`llmos data prepare` and `llmos tokenizer train`: thin argparse front ends over this package."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


def cmd_prepare(args: argparse.Namespace) -> int:
    from llmos.data.pack import prepare

    t0 = time.perf_counter()
    m = prepare(args.inputs, args.tokenizer, args.out, val_fraction=args.val_fraction, workers=args.workers)
    splits = m["splits"]
    print(f"prepared {m['documents']} documents ({m['duplicates_dropped']} duplicates dropped) into {args.out}: "
          f"{splits['train']['tokens']:,} train + {splits['val']['tokens']:,} val tokens, vocab {m['vocab_size']} "
          f"({m['dtype']}) in {time.perf_counter() - t0:.1f}s", file=sys.stderr)
    return 0


def cmd_tokenizer_train(args: argparse.Namespace) -> int:
    from llmos.data.pack import EOS
    from llmos.data.sources import load_corpus
    from llmos.fsutil import atomic_dir
    from llmos.tokenizer import Tokenizer

    t0 = time.perf_counter()
    corpus = load_corpus(args.inputs)
    if args.kind == "char":
        tok = Tokenizer.train_char(corpus.documents, special_tokens=[EOS] if len(corpus.documents) > 1 else [])
    else:
        tok = Tokenizer.train_bpe(corpus.documents, args.vocab_size, special_tokens=[EOS])
    with atomic_dir(Path(args.out)) as tmp:
        tok.save(tmp)
    print(f"trained a {args.kind} tokenizer with {tok.vocab_size} tokens on {len(corpus.documents)} documents "
          f"in {time.perf_counter() - t0:.1f}s; saved {Path(args.out) / 'tokenizer.json'}", file=sys.stderr)
    return 0


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    """Register `llmos data ...` and `llmos tokenizer ...`."""
    data = subparsers.add_parser("data", help="prepare training data (tokenized shards)")
    verbs = data.add_subparsers(dest="data_command", metavar="VERB", required=True)
    s = verbs.add_parser("prepare", help="tokenize .txt/.md/.jsonl/.parquet files or folders into token shards")
    s.add_argument("inputs", nargs="+", metavar="INPUT", help="files or folders")
    s.add_argument("--tokenizer", required=True,
                   help="char | bpe:VOCAB (trained on the corpus) | PATH (folder or tokenizer.json) | "
                        "model:NAME (a library model's tokenizer)")
    s.add_argument("--out", required=True, help="output folder")
    s.add_argument("--val-fraction", type=float, default=0.1, help="share of tokens held out (the last ones)")
    s.add_argument("--workers", type=int, help="tokenizer worker processes (default: up to 4)")
    s.set_defaults(func=cmd_prepare)

    tok = subparsers.add_parser("tokenizer", help="train a tokenizer on a corpus")
    verbs = tok.add_subparsers(dest="tokenizer_command", metavar="VERB", required=True)
    s = verbs.add_parser("train", help="train a byte-level BPE or char vocabulary; writes OUT/tokenizer.json")
    s.add_argument("inputs", nargs="+", metavar="INPUT", help="files or folders")
    s.add_argument("--kind", choices=["bpe", "char"], default="bpe")
    s.add_argument("--vocab-size", type=int, default=8192, help="BPE vocabulary size (with 256 byte symbols)")
    s.add_argument("--out", required=True, help="output folder")
    s.set_defaults(func=cmd_tokenizer_train)
