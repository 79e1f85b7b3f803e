"""The plain generation loop: prefill the prompt once, then one cached decode step per token.

`TextStream` turns the token stream into text deltas that never split a UTF-8 character and
never emit a stop string, even one that spans several tokens.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from llmos.engine.sampling import SamplingParams, sample
from llmos.model import ContextLengthError, KVCache, Transformer
from llmos.tokenizer import Tokenizer


def generate_tokens(model: Transformer, prompt_ids: list[int], params: SamplingParams,
                    eos_ids: set[int] | frozenset[int] = frozenset()) -> Iterator[int]:
    """Yield new token ids one at a time until max_new_tokens or a stop token (which is yielded)."""
    if not prompt_ids:
        raise ValueError("empty prompt: at least one token is needed")
    limit = model.config.block_size
    if len(prompt_ids) >= limit:
        raise ContextLengthError(f"prompt is too long: {len(prompt_ids)} tokens, context length is {limit}")
    stop_ids = set(eos_ids) | set(params.stop_token_ids)
    max_new = min(params.max_new_tokens, limit - len(prompt_ids))
    generator = None
    if params.seed is not None:
        generator = torch.Generator().manual_seed(params.seed)
    device = model.tok_emb.weight.device
    history = torch.tensor(prompt_ids, device=device)
    with torch.inference_mode():
        cache = KVCache(model.config, 1, capacity=len(prompt_ids) + max_new,
                        dtype=model.tok_emb.weight.dtype, device=device)
        logits = model(history[None], cache=cache, last_only=True)[0, -1]
        for i in range(max_new):
            token = sample(logits, params, history, generator)
            yield token
            if token in stop_ids or i == max_new - 1:
                return
            history = torch.cat([history, torch.tensor([token], device=device)])
            logits = model(torch.tensor([[token]], device=device), cache=cache)[0, -1]


class TextStream:
    """Incremental detokenizer with stop strings.

    `push(token)` returns the text that is now safe to show: complete characters only, and
    nothing that could still turn out to be the start of a stop string.
    """

    def __init__(self, tokenizer: Tokenizer, stop: list[str] | None = None,
                 skip_ids: set[int] | frozenset[int] = frozenset()) -> None:
        self.tokenizer, self.stop = tokenizer, [s for s in (stop or []) if s]
        self.skip_ids = skip_ids
        self.ids: list[int] = []
        self.text = ""  # decoded text of all ids so far
        self.sent = 0  # how much of `text` has been returned
        self.stopped = False

    def push(self, token: int) -> str:
        if self.stopped or token in self.skip_ids:
            return ""
        self.ids.append(token)
        text = self.tokenizer.decode(self.ids, skip_special_tokens=True)
        if text.endswith("\ufffd"):  # an incomplete UTF-8 sequence: wait for the next byte(s)
            return ""
        self.text = text
        for s in self.stop:
            at = text.find(s, max(0, self.sent - len(s)))
            if at != -1:
                self.stopped = True
                self.text = text[:at]
                return self._emit(at)
        hold = max((k for s in self.stop for k in range(1, len(s)) if text.endswith(s[:k])), default=0)
        return self._emit(len(text) - hold)

    def finish(self) -> str:
        """The held-back rest once generation has ended without a stop string."""
        return "" if self.stopped else self._emit(len(self.text))

    def _emit(self, upto: int) -> str:
        if upto <= self.sent:
            return ""
        delta, self.sent = self.text[self.sent:upto], upto
        return delta
