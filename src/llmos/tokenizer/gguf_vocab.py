"""Rebuild a Hugging Face `tokenizers.Tokenizer` from the tokenizer metadata a GGUF file carries.

A GGUF has no `tokenizer.json`: llama.cpp stores the vocabulary, the merges, per-token types and the
special-token ids as metadata keys, and picks the pre-tokenizer regex from a short name
(`tokenizer.ggml.pre`). We translate that back into the same pipeline the original model used, so the
ids match llama.cpp and transformers' GGUF loader.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tokenizers import AddedToken, Regex, decoders, models, pre_tokenizers
from tokenizers import Tokenizer as Backend

from llmos.errors import ConfigError, ModelFormatError

log = logging.getLogger(__name__)

# llama.cpp's token types (enum llama_token_type in gguf-py).
TOKEN_NORMAL = 1
TOKEN_UNKNOWN = 2
TOKEN_CONTROL = 3
TOKEN_USER_DEFINED = 4
TOKEN_UNUSED = 5
TOKEN_BYTE = 6

# --- Pre-tokenizer regexes -------------------------------------------------------------------------
# Each byte-level BPE vocabulary was learned on text cut by one particular regex; encoding with a
# different one gives valid but different ids, which the model never saw in training.

GPT2_SPLIT = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"

LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)

# Same as Llama 3 but numbers are cut into single digits.
QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)

_UPPERISH = r"[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]"
_LOWERISH = r"[\p{Ll}\p{Lm}\p{Lo}\p{M}]"
_CONTRACTIONS = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)"

GPT4O_SPLIT = (
    rf"[^\r\n\p{{L}}\p{{N}}]?{_UPPERISH}*{_LOWERISH}+{_CONTRACTIONS}?"
    rf"|[^\r\n\p{{L}}\p{{N}}]?{_UPPERISH}+{_LOWERISH}*{_CONTRACTIONS}?"
    r"|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)

TEKKEN_SPLIT = (
    rf"[^\r\n\p{{L}}\p{{N}}]?{_UPPERISH}*{_LOWERISH}+"
    rf"|[^\r\n\p{{L}}\p{{N}}]?{_UPPERISH}+{_LOWERISH}*"
    r"|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)

# `tokenizer.ggml.pre` name -> family. The names are the ones llama.cpp's converter writes.
_PRE_FAMILIES: dict[str, str] = {
    **dict.fromkeys(["default", "gpt-2", "gpt2", "mpt", "olmo", "jais", "trillion"], "gpt2"),
    # StarCoder-style vocabularies were trained with every digit on its own, then the GPT-2 regex.
    **dict.fromkeys(
        ["smollm", "starcoder", "refact", "command-r", "codeshell", "exaone", "minerva-7b"], "gpt2-digits"
    ),
    **dict.fromkeys(["llama3", "llama-v3", "llama-bpe", "falcon3", "dbrx", "smaug-bpe"], "llama3"),
    **dict.fromkeys(["qwen2", "stablelm2", "deepseek-r1-qwen"], "qwen2"),
    **dict.fromkeys(["gpt-4o", "llama4"], "gpt4o"),
    "tekken": "tekken",
}

_FAMILY_SPLITS = {"llama3": LLAMA3_SPLIT, "qwen2": QWEN2_SPLIT, "gpt4o": GPT4O_SPLIT, "tekken": TEKKEN_SPLIT}


def byte_level_pre_tokenizer(pre: str | None) -> pre_tokenizers.PreTokenizer:
    """The pre-tokenizer for a byte-level BPE vocabulary whose `tokenizer.ggml.pre` is `pre`."""
    family = _PRE_FAMILIES.get(pre or "default")
    if family is None:
        # transformers falls back to GPT-2 for names it does not know; we do the same so a new model
        # still loads, but say so because the ids may be slightly off.
        log.warning("unknown tokenizer.ggml.pre %r; using the GPT-2 split regex", pre)
        family = "gpt2"
    if family == "gpt2":
        return pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    if family == "gpt2-digits":
        return pre_tokenizers.Sequence(
            [
                pre_tokenizers.Digits(individual_digits=True),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
            ]
        )
    return pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(_FAMILY_SPLITS[family]), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )


def gpt2_byte_alphabet() -> dict[int, str]:
    """GPT-2's byte -> printable character table (the alphabet byte-level BPE tokens are spelled in)."""
    # Printable Latin-1 bytes stand for themselves; the rest are shifted above U+0100 so that no
    # token contains whitespace or control characters.
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table = {b: chr(b) for b in keep}
    shift = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + shift)
            shift += 1
    return table


# --- Reading the metadata ----------------------------------------------------------------------------


@dataclass
class GgufTokenizerParts:
    """Everything `Tokenizer.from_gguf_metadata` needs besides the backend itself."""

    backend: Backend
    bos_token: str | None
    eos_token: str | None
    pad_token: str | None
    unk_token: str | None
    add_bos_token: bool
    add_eos_token: bool
    chat_template: str | None
    model_max_length: int | None
    name: str


def _get(meta: Mapping[str, Any], key: str) -> Any:
    value = meta.get(key)
    # GGUF readers sometimes hand back numpy scalars/arrays; normalise to plain Python.
    if hasattr(value, "tolist"):
        value = value.tolist()
    return value


def _optional_id(meta: Mapping[str, Any], key: str, tokens: Sequence[str]) -> int | None:
    value = _get(meta, key)
    if value is None:
        return None
    try:
        index = int(value)
    except (TypeError, ValueError):
        raise ModelFormatError(f"GGUF metadata {key} is {value!r}, not a token id") from None
    if not 0 <= index < len(tokens):
        # llama.cpp writes -1 or an out-of-range id for "none" in some files; treat it as unset.
        return None
    return index


def _string_list(meta: Mapping[str, Any], key: str) -> list[str]:
    value = _get(meta, key)
    if not isinstance(value, (list, tuple)):
        raise ModelFormatError(f"GGUF metadata {key} is missing or not a list")
    return [v.decode("utf-8", errors="replace") if isinstance(v, bytes) else str(v) for v in value]


def _unique_vocab(tokens: Sequence[str]) -> dict[str, int]:
    vocab: dict[str, int] = {}
    for index, token in enumerate(tokens):
        if token in vocab:
            # Ids must stay contiguous to line up with the embedding rows, so a repeated string gets
            # a placeholder spelling that no text can produce.
            log.warning("GGUF vocabulary repeats token %r at id %d; renaming the copy", token, index)
            token = f"<|llmos_duplicate_{index}|>"
        vocab[token] = index
    return vocab


def _parse_merges(raw: Sequence[str]) -> list[tuple[str, str]]:
    merges = []
    for line in raw:
        parts = line.split(" ")
        if len(parts) != 2:
            raise ModelFormatError(f"GGUF metadata tokenizer.ggml.merges has a malformed entry {line!r}")
        merges.append((parts[0], parts[1]))
    return merges


def build_from_gguf_metadata(meta: Mapping[str, Any]) -> GgufTokenizerParts:
    """Build the tokenizer a GGUF file describes. Supports the `gpt2` and `llama` tokenizer models."""
    kind = _get(meta, "tokenizer.ggml.model")
    if kind is None:
        raise ModelFormatError("GGUF metadata has no tokenizer.ggml.model; the file carries no tokenizer")
    tokens = _string_list(meta, "tokenizer.ggml.tokens")
    raw_types = _get(meta, "tokenizer.ggml.token_type")
    types = [int(t) for t in raw_types] if raw_types is not None else [TOKEN_NORMAL] * len(tokens)
    if len(types) != len(tokens):
        raise ModelFormatError(
            f"GGUF metadata tokenizer.ggml.token_type has {len(types)} entries for {len(tokens)} tokens"
        )

    ids = {
        name: _optional_id(meta, f"tokenizer.ggml.{key}", tokens)
        for name, key in [("bos", "bos_token_id"), ("eos", "eos_token_id"), ("unk", "unknown_token_id"),
                          ("pad", "padding_token_id")]
    }
    flag_bos = _get(meta, "tokenizer.ggml.add_bos_token")
    flag_eos = _get(meta, "tokenizer.ggml.add_eos_token")
    space_prefix = _get(meta, "tokenizer.ggml.add_space_prefix")

    if kind == "gpt2":
        backend = _byte_level_bpe(meta, tokens, types)
        add_bos_default = False
    elif kind == "llama":
        backend = _sentencepiece_bpe(meta, tokens, types, ids["unk"], True if space_prefix is None else bool(space_prefix))
        # Old SentencePiece files have no flag, and llama.cpp adds BOS to those; follow it.
        add_bos_default = True
    else:
        raise ConfigError(
            f"GGUF tokenizer.ggml.model {kind!r} is not supported (supported: 'gpt2', 'llama')"
        )

    arch = _get(meta, "general.architecture")
    context = _get(meta, f"{arch}.context_length") if arch else None
    template = _get(meta, "tokenizer.chat_template")
    return GgufTokenizerParts(
        backend=backend,
        bos_token=tokens[ids["bos"]] if ids["bos"] is not None else None,
        eos_token=tokens[ids["eos"]] if ids["eos"] is not None else None,
        pad_token=tokens[ids["pad"]] if ids["pad"] is not None else None,
        unk_token=tokens[ids["unk"]] if ids["unk"] is not None else None,
        add_bos_token=add_bos_default if flag_bos is None else bool(flag_bos),
        add_eos_token=bool(flag_eos) if flag_eos is not None else False,
        chat_template=str(template) if template else None,
        model_max_length=int(context) if context else None,
        name=str(_get(meta, "general.name") or "GGUF model"),
    )


def _add_typed_tokens(backend: Backend, tokens: Sequence[str], types: Sequence[int], special_types: set[int]) -> None:
    # Control tokens must never be cut up by BPE and are what skip_special_tokens removes;
    # user-defined ones (like `<think>`) are matched whole too, but stay ordinary text on decode.
    def added(token: str, special: bool) -> AddedToken:
        return AddedToken(token, special=special, normalized=False, lstrip=False, rstrip=False, single_word=False)

    backend.add_special_tokens([added(t, True) for t, k in zip(tokens, types) if k in special_types])
    backend.add_tokens([added(t, False) for t, k in zip(tokens, types) if k == TOKEN_USER_DEFINED])


def _byte_level_bpe(meta: Mapping[str, Any], tokens: list[str], types: list[int]) -> Backend:
    alphabet = gpt2_byte_alphabet()
    spelled = set(alphabet.values())

    def respell(token: str, token_type: int) -> str:
        # Normal tokens are stored in the byte alphabet already. A control/user token is kept as
        # written, so the added token and the vocab entry are the same string (and the same id).
        if token_type in (TOKEN_CONTROL, TOKEN_USER_DEFINED) or set(token) <= spelled:
            return token
        return "".join(alphabet[b] for b in token.encode("utf-8"))

    spelled_tokens = [respell(t, k) for t, k in zip(tokens, types)]
    vocab = _unique_vocab(spelled_tokens)
    merges = _parse_merges(_string_list(meta, "tokenizer.ggml.merges"))
    backend = Backend(
        models.BPE(vocab=vocab, merges=merges, dropout=None, continuing_subword_prefix="",
                   end_of_word_suffix="", fuse_unk=False, byte_fallback=False)
    )
    backend.pre_tokenizer = byte_level_pre_tokenizer(_get(meta, "tokenizer.ggml.pre"))
    backend.decoder = decoders.ByteLevel()
    _add_typed_tokens(backend, spelled_tokens, types, {TOKEN_CONTROL})
    return backend


def _merges_from_scores(tokens: Sequence[str], types: Sequence[int], scores: Sequence[float]) -> list[tuple[str, str]]:
    """SentencePiece BPE stores no merges, only a score per piece. SentencePiece merges the pair whose
    result scores highest first, so merge ranks follow the merged piece's score."""
    # Control, byte and unknown pieces are never built from text, so they take no part in merges;
    # this also keeps special-token text typed by a user from merging into the real special token.
    mergeable = {
        token: index for index, (token, kind) in enumerate(zip(tokens, types)) if kind == TOKEN_NORMAL
    }
    candidates = []
    for token, index in mergeable.items():
        for cut in range(1, len(token)):
            left, right = token[:cut], token[cut:]
            if left in mergeable and right in mergeable:
                # Ties: longer left piece, then longer right piece, then vocabulary order - the same
                # order transformers derives, so both agree on ids.
                key = (-float(scores[index]), -len(left), -len(right), index, mergeable[left], mergeable[right])
                candidates.append((key, left, right))
    candidates.sort()
    return [(left, right) for _, left, right in candidates]


def _sentencepiece_bpe(meta: Mapping[str, Any], tokens: list[str], types: list[int], unk_id: int | None,
                       space_prefix: bool) -> Backend:
    scores = _get(meta, "tokenizer.ggml.scores")
    if scores is None or len(scores) != len(tokens):
        raise ModelFormatError("GGUF metadata tokenizer.ggml.scores is missing or does not match the tokens")
    vocab = _unique_vocab(tokens)
    raw_merges = _get(meta, "tokenizer.ggml.merges")
    merges = _parse_merges(raw_merges) if raw_merges else _merges_from_scores(tokens, types, scores)
    backend = Backend(
        models.BPE(vocab=vocab, merges=merges, unk_token=tokens[unk_id] if unk_id is not None else None,
                   fuse_unk=True, byte_fallback=True, dropout=None)
    )
    backend.pre_tokenizer = pre_tokenizers.Metaspace(
        replacement="▁", prepend_scheme="first" if space_prefix else "never", split=False
    )
    steps = [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()]
    if space_prefix:
        # Undo the "▁" the pre-tokenizer put in front of the text.
        steps.append(decoders.Strip(content=" ", left=1, right=0))
    backend.decoder = decoders.Sequence(steps)
    _add_typed_tokens(backend, tokens, types, {TOKEN_CONTROL, TOKEN_UNKNOWN})
    return backend
