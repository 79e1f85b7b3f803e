"""Train small tokenizers from text: GPT-2 style byte-level BPE, or one token per character.

Both produce a plain `tokenizers.Tokenizer`, so they save and load through the same `tokenizer.json`
path as downloaded models and transformers can read them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from tokenizers import AddedToken, Regex, decoders, models, pre_tokenizers, trainers
from tokenizers import Tokenizer as Backend

from llmos.errors import ConfigError


def _special(tokens: Sequence[str]) -> list[AddedToken]:
    return [AddedToken(t, special=True, normalized=False) for t in tokens]


def train_bpe_backend(texts: Iterable[str], vocab_size: int, special_tokens: Sequence[str]) -> Backend:
    """Byte-level BPE with GPT-2's split regex; the 256 byte symbols are always in the vocabulary,
    so any text (any language, emoji, binary junk) encodes without an unknown token."""
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    floor = len(alphabet) + len(special_tokens)
    if vocab_size < floor:
        raise ConfigError(
            f"vocab_size {vocab_size} is too small: byte-level BPE needs at least {floor} "
            f"(256 byte symbols + {len(special_tokens)} special tokens)"
        )
    if len(set(special_tokens)) != len(special_tokens):
        raise ConfigError(f"special_tokens has duplicates: {list(special_tokens)}")
    backend = Backend(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=_special(special_tokens),
        initial_alphabet=alphabet,
        show_progress=False,
    )
    backend.train_from_iterator(texts, trainer=trainer)
    return backend


def train_char_backend(texts: Iterable[str], special_tokens: Sequence[str] = ()) -> Backend:
    """One token per distinct character, ids in sorted character order (nanoGPT's char-level scheme).

    Special tokens, if any, come after the characters so character ids do not depend on them.
    """
    chars: set[str] = set()
    for text in texts:
        chars.update(text)
    if not chars:
        raise ConfigError("train_char got no text: the vocabulary would be empty")
    vocab = {ch: i for i, ch in enumerate(sorted(chars))}
    for token in special_tokens:
        if token in vocab:
            raise ConfigError(f"special token {token!r} is also a character of the training text")
        vocab[token] = len(vocab)
    # No unk token on purpose: a character the model never saw has no embedding, so encoding it
    # must fail loudly rather than map silently to something else.
    backend = Backend(models.WordLevel(vocab=vocab, unk_token=None))
    # `[\s\S]` (not `.`) so newlines become tokens too.
    backend.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated", invert=False)
    # WordLevel's default decode joins tokens with spaces; Fuse concatenates them as they are.
    backend.decoder = decoders.Fuse()
    if special_tokens:
        backend.add_special_tokens(_special(special_tokens))
    return backend
