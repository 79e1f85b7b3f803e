"""Log-probabilities: the prompt's (for `echo`), and both OpenAI response shapes for them.

Completions use the legacy shape (`tokens`, `token_logprobs`, `top_logprobs` dicts, `text_offset`);
chat uses `content: [{token, logprob, bytes, top_logprobs: [...]}]`. Token strings come from the
tokenizer; `bytes` are the token's exact bytes (a byte-level BPE token may hold part of a character).
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import Any

_BYTE_DECODERS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _gpt2_byte_decoder() -> dict[str, int]:
    # GPT-2's byte-level alphabet: printable bytes map to themselves, the rest to U+0100 onwards.
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    chars, extra = {}, 0
    for b in range(256):
        if b in printable:
            chars[chr(b)] = b
        else:
            chars[chr(256 + extra)] = b
            extra += 1
    return chars


class TokenStrings:
    """Token id -> (text, bytes), cached per tokenizer."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        decoder = getattr(tokenizer.backend, "decoder", None)
        self.byte_level = type(decoder).__name__ == "ByteLevel"
        self.byte_decoder = _gpt2_byte_decoder() if self.byte_level else {}
        self.cache: dict[int, tuple[str, list[int]]] = {}

    @classmethod
    def of(cls, tokenizer: Any) -> TokenStrings:
        strings = _BYTE_DECODERS.get(tokenizer)
        if strings is None:
            strings = _BYTE_DECODERS[tokenizer] = cls(tokenizer)
        return strings

    def get(self, token_id: int) -> tuple[str, list[int]]:
        hit = self.cache.get(token_id)
        if hit is not None:
            return hit
        raw = self.tokenizer.id_to_token(token_id) or ""
        if self.byte_level and raw and all(c in self.byte_decoder for c in raw):
            data = bytes(self.byte_decoder[c] for c in raw)
            text = data.decode("utf-8", errors="replace")
        else:
            text = self.tokenizer.decode([token_id])
            data = text.encode("utf-8")
        hit = self.cache[token_id] = (text, list(data))
        return hit


@dataclass
class TokenLogprob:
    token_id: int
    logprob: float | None  # None for the first prompt token (nothing precedes it)
    top: list[tuple[int, float]] | None


def compute_prompt_logprobs(model: Any, ids: list[int], top: int, chunk: int = 256) -> list[TokenLogprob]:
    """Log-probability of every prompt token given the ones before it. Runs on the engine thread."""
    import torch
    import torch.nn.functional as F

    with torch.inference_mode():
        hidden = model(torch.tensor([ids]), return_hidden=True)[0]
        out = [TokenLogprob(ids[0], None, None)]
        # Project to the vocabulary a chunk at a time: [4096, 49152] fp32 logits would be 800 MB.
        for start in range(0, len(ids) - 1, chunk):
            h = hidden[start:min(start + chunk, len(ids) - 1)]
            logits = model.lm_head(h) if model.lm_head is not None else F.linear(h, model.tok_emb.weight)
            logp = torch.log_softmax(logits.float(), dim=-1)
            targets = torch.tensor(ids[start + 1:start + 1 + len(h)])
            chosen = logp.gather(1, targets[:, None])[:, 0].tolist()
            if top:
                values, indices = torch.topk(logp, top, dim=-1)
                tops = [list(zip(i, v)) for i, v in zip(indices.tolist(), values.tolist())]
            else:
                tops = [[] for _ in chosen]
            for target, lp, alternatives in zip(targets.tolist(), chosen, tops):
                out.append(TokenLogprob(target, lp, alternatives))
    return out


def completion_logprobs(strings: TokenStrings, entries: list[TokenLogprob], offset: int = 0) -> dict[str, Any]:
    """The legacy completions shape; `offset` is where the first token's text starts."""
    tokens, token_logprobs, tops, offsets = [], [], [], []
    for entry in entries:
        text = strings.get(entry.token_id)[0]
        tokens.append(text)
        token_logprobs.append(entry.logprob)
        offsets.append(offset)
        offset += len(text)
        if entry.logprob is None:
            tops.append(None)
            continue
        alternatives = {strings.get(t)[0]: lp for t, lp in (entry.top or [])}
        alternatives.setdefault(text, entry.logprob)  # the chosen token is always listed
        tops.append(alternatives)
    return {"tokens": tokens, "token_logprobs": token_logprobs, "top_logprobs": tops, "text_offset": offsets}


def chat_logprobs(strings: TokenStrings, entries: list[TokenLogprob]) -> list[dict[str, Any]]:
    content = []
    for entry in entries:
        text, data = strings.get(entry.token_id)
        content.append({"token": text, "logprob": entry.logprob, "bytes": data,
                        "top_logprobs": [{"token": strings.get(t)[0], "logprob": lp, "bytes": strings.get(t)[1]}
                                         for t, lp in (entry.top or [])]})
    return content
