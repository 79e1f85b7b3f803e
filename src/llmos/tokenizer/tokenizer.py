"""`Tokenizer`: one wrapper over a Hugging Face `tokenizers.Tokenizer` for every model llmos handles.

Whatever the source (a transformers folder, GGUF metadata, or training from text), the result is a
`tokenizers.Tokenizer` plus a few facts that live outside `tokenizer.json` in the Hugging Face layout
(BOS/EOS tokens, whether BOS is added, chat templates). Keeping one representation means one
encode/decode path and one save format, which transformers can load back.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from functools import cached_property
from pathlib import Path
from typing import Any, Literal, overload

from tokenizers import AddedToken, processors
from tokenizers import Tokenizer as Backend

from llmos.errors import ConfigError, LlmosError, ModelFormatError, NotFoundError
from llmos.tokenizer import chat_template as chat
from llmos.tokenizer.gguf_vocab import build_from_gguf_metadata
from llmos.tokenizer.training import train_bpe_backend, train_char_backend

log = logging.getLogger(__name__)

# Tokens that end an assistant turn in common chat formats. Generation must stop on them even when
# the model's declared EOS is something else (e.g. Llama 3's EOS is <|end_of_text|>, but chats end
# with <|eot_id|>). Only used when present as special tokens.
_END_OF_TURN_TOKENS = (
    "<|im_end|>", "<|eot_id|>", "<|eom_id|>", "<|end_of_text|>", "<|endoftext|>", "<|end|>",
    "<end_of_turn>", "<|return|>", "</s>", "<eos>",
)

# transformers writes a huge sentinel (int(1e30)) when the model's maximum length is unknown.
_UNKNOWN_MAX_LENGTH = 10**18


class TokenizeError(LlmosError):
    """Text that this tokenizer cannot encode (e.g. a character a char-level vocabulary never saw)."""


def _template_processor(bos: tuple[str, int] | None, eos: tuple[str, int] | None) -> processors.TemplateProcessing:
    # The same layout transformers' `update_post_processor` builds from add_bos_token/add_eos_token,
    # so a saved tokenizer encodes identically there.
    single = [f"{bos[0]}:0"] if bos else []
    single += ["$A:0"] + ([f"{eos[0]}:0"] if eos else [])
    pair = single + ([f"{bos[0]}:1"] if bos else []) + ["$B:1"] + ([f"{eos[0]}:1"] if eos else [])
    specials = [t for t in (bos, eos) if t is not None]
    return processors.TemplateProcessing(single=single, pair=pair, special_tokens=list(dict.fromkeys(specials)))


def _set_bos_eos(backend: Backend, bos: str | None, eos: str | None, add_bos: bool, add_eos: bool) -> None:
    bos_id = backend.token_to_id(bos) if bos is not None else None
    eos_id = backend.token_to_id(eos) if eos is not None else None
    backend.post_processor = _template_processor(
        (bos, bos_id) if add_bos and bos is not None and bos_id is not None else None,
        (eos, eos_id) if add_eos and eos is not None and eos_id is not None else None,
    )


def _atomic_write(path: Path, text: str) -> None:
    # Write next to the target and rename over it, so a crash never leaves a half-written file
    # where a reader (or transformers) would find it.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ModelFormatError(f"{path} is not valid JSON (line {exc.lineno}: {exc.msg})") from exc
    except UnicodeDecodeError as exc:
        raise ModelFormatError(f"{path} is not UTF-8 text") from exc


def _read_json_object(path: Path) -> dict[str, Any]:
    value = _read_json(path)
    if not isinstance(value, dict):
        raise ModelFormatError(f"{path} must hold a JSON object, found {type(value).__name__}")
    return value


def _token_field(value: Any, where: str) -> str | None:
    # tokenizer_config.json writes special tokens either as strings or as serialised AddedTokens.
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, dict) and isinstance(value.get("content"), str):
        return value["content"]
    raise ConfigError(f"{where} must be a string or an object with a 'content' string, got {value!r}")


class Tokenizer:
    """Text <-> token ids, special tokens and chat-prompt rendering for one model."""

    def __init__(
        self,
        backend: Backend,
        *,
        bos_token: str | None = None,
        eos_token: str | None = None,
        pad_token: str | None = None,
        unk_token: str | None = None,
        chat_template: str | Mapping[str, str] | None = None,
        model_max_length: int | None = None,
        extra_eos_ids: Iterable[int] = (),
        name: str = "tokenizer",
    ) -> None:
        """Wrap `backend` as is: its post-processor decides what `add_special_tokens` adds.

        Prefer the `from_*` and `train_*` constructors, which set that post-processor up.
        """
        self._backend = backend
        self._bos_token = bos_token
        self._eos_token = eos_token
        self._pad_token = pad_token
        self._unk_token = unk_token
        if chat_template is None:
            self._templates: dict[str, str] = {}
        elif isinstance(chat_template, str):
            self._templates = {"default": chat_template}
        else:
            self._templates = dict(chat_template)
        self._model_max_length = model_max_length
        self._extra_eos_ids = frozenset(int(i) for i in extra_eos_ids)
        self.name = name

        added = backend.get_added_tokens_decoder()
        self._added: dict[str, tuple[int, AddedToken]] = {tok.content: (i, tok) for i, tok in added.items()}
        self._special_ids = frozenset(i for i, tok in added.items() if tok.special)
        self._special_regex = chat.special_pattern([tok.content for tok in added.values() if tok.special])

        # What add_special_tokens=True actually adds, read back from the post-processor, so the
        # flags we report (and save) can never disagree with the ids we produce.
        framing = backend.encode("", add_special_tokens=True).ids
        bos_id, eos_id = self.bos_id, self.eos_id
        self._adds_bos = bos_id is not None and framing[:1] == [bos_id]
        self._adds_eos = eos_id is not None and framing[-1:] == [eos_id] and len(framing) > int(self._adds_bos)
        self._framing_is_flags = framing == [bos_id] * self._adds_bos + [eos_id] * self._adds_eos

    # --- constructors ------------------------------------------------------------------------------

    @classmethod
    def from_folder(cls, path: str | os.PathLike[str]) -> Tokenizer:
        """Load a Hugging Face tokenizer folder (`tokenizer.json` + `tokenizer_config.json`, optionally
        `special_tokens_map.json`, `chat_template.jinja`, `additional_chat_templates/`,
        `generation_config.json`)."""
        folder = Path(path)
        if folder.is_file() and folder.name == "tokenizer.json":
            folder = folder.parent
        if not folder.is_dir():
            raise NotFoundError(f"tokenizer folder {folder} does not exist")
        tokenizer_file = folder / "tokenizer.json"
        if not tokenizer_file.is_file():
            raise NotFoundError(f"{tokenizer_file} not found: a tokenizer folder needs tokenizer.json")
        try:
            backend = Backend.from_file(str(tokenizer_file))
        except Exception as exc:
            # Parse it ourselves only on failure, to say whether it is not JSON at all (with the line).
            _read_json_object(tokenizer_file)
            raise ModelFormatError(f"{tokenizer_file} is not a valid tokenizers file: {exc}") from exc

        config_file = folder / "tokenizer_config.json"
        config = _read_json_object(config_file) if config_file.is_file() else {}
        map_file = folder / "special_tokens_map.json"
        legacy_map = _read_json_object(map_file) if map_file.is_file() else {}

        def token(key: str) -> str | None:
            if key in config:
                return _token_field(config[key], f"{config_file}: field {key}")
            return _token_field(legacy_map.get(key), f"{map_file}: field {key}")

        bos, eos, pad, unk = (token(k) for k in ("bos_token", "eos_token", "pad_token", "unk_token"))
        for key in ("add_bos_token", "add_eos_token"):
            if config.get(key) is not None and not isinstance(config[key], bool):
                raise ConfigError(f"{config_file}: field {key} must be true or false, got {config[key]!r}")
        # transformers rebuilds the post-processor from the flags only when the config states them
        # (or tokenizer.json has none); otherwise tokenizer.json's own post-processor rules.
        if "add_bos_token" in config or "add_eos_token" in config or backend.post_processor is None:
            _set_bos_eos(backend, bos, eos, bool(config.get("add_bos_token")), bool(config.get("add_eos_token")))

        max_length = config.get("model_max_length")
        if not isinstance(max_length, (int, float)) or isinstance(max_length, bool) or max_length >= _UNKNOWN_MAX_LENGTH:
            max_length = None
        return cls(
            backend,
            bos_token=bos,
            eos_token=eos,
            pad_token=pad,
            unk_token=unk,
            chat_template=_load_templates(folder, config, config_file),
            model_max_length=int(max_length) if max_length is not None else None,
            extra_eos_ids=_generation_eos_ids(folder / "generation_config.json"),
            name=str(folder),
        )

    @classmethod
    def from_gguf_metadata(cls, meta: Mapping[str, Any]) -> Tokenizer:
        """Build the tokenizer described by a GGUF file's metadata (key -> Python value)."""
        parts = build_from_gguf_metadata(meta)
        _set_bos_eos(parts.backend, parts.bos_token, parts.eos_token, parts.add_bos_token, parts.add_eos_token)
        return cls(
            parts.backend,
            bos_token=parts.bos_token,
            eos_token=parts.eos_token,
            pad_token=parts.pad_token,
            unk_token=parts.unk_token,
            chat_template=parts.chat_template,
            model_max_length=parts.model_max_length,
            name=parts.name,
        )

    @classmethod
    def from_gguf(cls, path: str | os.PathLike[str]) -> Tokenizer:
        """Read a GGUF file's metadata and build its tokenizer (`from_gguf_metadata`)."""
        import gguf  # only this constructor needs it, and it is slow to import

        file = Path(path)
        if not file.is_file():
            raise NotFoundError(f"GGUF file {file} does not exist")
        try:
            reader = gguf.GGUFReader(file)
        except Exception as exc:
            raise ModelFormatError(f"{file} is not a readable GGUF file: {exc}") from exc
        meta = {key: field.contents() for key, field in reader.fields.items()
                if key.startswith(("tokenizer.", "general.")) or key.endswith(".context_length")}
        tokenizer = cls.from_gguf_metadata(meta)
        if tokenizer.name == "GGUF model":
            tokenizer.name = str(file)
        return tokenizer

    @classmethod
    def train_bpe(cls, texts: Iterable[str], vocab_size: int,
                  special_tokens: Sequence[str] = ("<|endoftext|>",)) -> Tokenizer:
        """Train GPT-2 style byte-level BPE. The first special token serves as BOS/EOS (as in GPT-2);
        BOS is not added by `encode`."""
        backend = train_bpe_backend(texts, vocab_size, list(special_tokens))
        first = special_tokens[0] if special_tokens else None
        _set_bos_eos(backend, first, first, add_bos=False, add_eos=False)
        return cls(backend, bos_token=first, eos_token=first, name="trained BPE tokenizer")

    @classmethod
    def train_char(cls, texts: Iterable[str], special_tokens: Sequence[str] = ()) -> Tokenizer:
        """One token per distinct character, in sorted order; `special_tokens` get the ids after them
        and the first one serves as EOS."""
        backend = train_char_backend(texts, list(special_tokens))
        first = special_tokens[0] if special_tokens else None
        _set_bos_eos(backend, None, first, add_bos=False, add_eos=False)
        return cls(backend, eos_token=first, name="trained character tokenizer")

    # --- facts -------------------------------------------------------------------------------------

    @property
    def backend(self) -> Backend:
        """The underlying `tokenizers.Tokenizer` (do not mutate it; build a new `Tokenizer` instead)."""
        return self._backend

    @property
    def vocab_size(self) -> int:
        """Number of ids, added tokens included: the embedding needs this many rows."""
        return self._backend.get_vocab_size(with_added_tokens=True)

    def __len__(self) -> int:
        return self.vocab_size

    @property
    def bos_token(self) -> str | None:
        return self._bos_token

    @property
    def eos_token(self) -> str | None:
        return self._eos_token

    @property
    def pad_token(self) -> str | None:
        return self._pad_token

    @property
    def unk_token(self) -> str | None:
        return self._unk_token

    def _id_of(self, token: str | None) -> int | None:
        return self._backend.token_to_id(token) if token is not None else None

    @property
    def bos_id(self) -> int | None:
        return self._id_of(self._bos_token)

    @property
    def eos_id(self) -> int | None:
        return self._id_of(self._eos_token)

    @property
    def pad_id(self) -> int | None:
        return self._id_of(self._pad_token)

    @property
    def unk_id(self) -> int | None:
        return self._id_of(self._unk_token)

    @property
    def add_bos_token(self) -> bool:
        """Whether `encode(..., add_special_tokens=True)` puts BOS first."""
        return self._adds_bos

    @property
    def add_eos_token(self) -> bool:
        """Whether `encode(..., add_special_tokens=True)` puts EOS last."""
        return self._adds_eos

    @cached_property
    def eos_ids(self) -> frozenset[int]:
        """Ids that end generation: EOS, ids from generation_config.json, and end-of-turn specials."""
        ids = set(self._extra_eos_ids)
        if self.eos_id is not None:
            ids.add(self.eos_id)
        for text in _END_OF_TURN_TOKENS:
            entry = self._added.get(text)
            if entry is not None and entry[1].special:
                ids.add(entry[0])
        return frozenset(ids)

    @property
    def special_ids(self) -> frozenset[int]:
        """Ids of special added tokens (what `skip_special_tokens` drops)."""
        return self._special_ids

    @property
    def model_max_length(self) -> int | None:
        return self._model_max_length

    @property
    def chat_template(self) -> str | None:
        """The default chat template source, or None."""
        return self._templates.get("default")

    @property
    def chat_templates(self) -> dict[str, str]:
        """All chat templates by name ("default", "tool_use", ...)."""
        return dict(self._templates)

    def token_to_id(self, token: str) -> int | None:
        return self._backend.token_to_id(token)

    def id_to_token(self, token_id: int) -> str | None:
        return self._backend.id_to_token(int(token_id))

    def __repr__(self) -> str:
        return f"Tokenizer({self.name!r}, vocab_size={self.vocab_size}, bos={self._bos_token!r}, eos={self._eos_token!r})"

    # --- encode / decode ---------------------------------------------------------------------------

    @cached_property
    def _plain_backend(self) -> Backend:
        # A copy that treats special-token text as ordinary text. A separate object, because the
        # flag lives on the tokenizer and flipping it per call would race between threads.
        copy = Backend.from_str(self._backend.to_str())
        copy.encode_special_tokens = True
        return copy

    @cached_property
    def _plain_continuation_backend(self) -> Backend:
        # tokenizers adds SentencePiece's leading "▁" (Metaspace prepend_scheme "first") only at the
        # very start of the input. When a prompt is encoded in pieces, the later pieces must not get
        # it, so this copy never prepends. For other tokenizers it is the plain copy itself.
        spec = json.loads(self._backend.to_str())
        changed = False

        def visit(node: Any) -> None:
            nonlocal changed
            if isinstance(node, dict):
                if node.get("type") == "Metaspace" and node.get("prepend_scheme") == "first":
                    node["prepend_scheme"] = "never"
                    changed = True
                for child in node.values():
                    visit(child)
            elif isinstance(node, list):
                for child in node:
                    visit(child)

        visit(spec.get("pre_tokenizer"))
        if not changed:
            return self._plain_backend
        copy = Backend.from_str(json.dumps(spec))
        copy.encode_special_tokens = True
        return copy

    def encode(self, text: str, add_special_tokens: bool = True, parse_special: bool = True) -> list[int]:
        """Token ids for `text`.

        `add_special_tokens` adds BOS/EOS as the model's config says. With `parse_special` (the
        default, as in transformers) special-token text such as `<|im_end|>` becomes that special
        token; with `parse_special=False` it is encoded as ordinary text, which is what untrusted
        input (user chat content) needs so it cannot fake a role switch.
        """
        backend = self._backend if parse_special else self._plain_backend
        try:
            # The batch "fast" path skips offset tracking, which we never use: 2-4x quicker.
            return backend.encode_batch_fast([text], add_special_tokens=add_special_tokens)[0].ids
        except Exception as exc:
            raise TokenizeError(f"{self.name} cannot encode this text: {exc}") from exc

    def encode_batch(self, texts: Sequence[str], add_special_tokens: bool = True,
                     parse_special: bool = True) -> list[list[int]]:
        """`encode` for many texts at once (in parallel inside `tokenizers`)."""
        backend = self._backend if parse_special else self._plain_backend
        try:
            encodings = backend.encode_batch_fast(list(texts), add_special_tokens=add_special_tokens)
        except Exception as exc:
            raise TokenizeError(f"{self.name} cannot encode this text: {exc}") from exc
        return [e.ids for e in encodings]

    def decode(self, ids: Iterable[int], skip_special_tokens: bool = False) -> str:
        """Text for `ids`; `skip_special_tokens` drops special tokens such as `<|im_end|>`."""
        return self._backend.decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens)

    def decode_batch(self, batch: Iterable[Iterable[int]], skip_special_tokens: bool = False) -> list[str]:
        return self._backend.decode_batch([[int(i) for i in ids] for ids in batch],
                                          skip_special_tokens=skip_special_tokens)

    # --- chat --------------------------------------------------------------------------------------

    def _template_source(self, chat_template: str | None, tools: Any) -> str:
        if chat_template is not None:
            # Either the name of one of this model's templates, or a template's source itself.
            return self._templates.get(chat_template, chat_template)
        if tools is not None and "tool_use" in self._templates:
            return self._templates["tool_use"]
        if "default" in self._templates:
            return self._templates["default"]
        if self._templates:
            raise ConfigError(
                f"{self.name} has several chat templates and no default; pass chat_template= one of "
                f"{sorted(self._templates)}"
            )
        raise ConfigError(
            f"{self.name} has no chat template (tokenizer_config.json chat_template, chat_template.jinja "
            "or GGUF tokenizer.chat_template); it is probably a base model, not a chat model"
        )

    @overload
    def apply_chat_template(self, messages: Sequence[Mapping[str, Any]], add_generation_prompt: bool = ...,
                            tokenize: Literal[False] = ..., *, chat_template: str | None = ...,
                            tools: Any = ..., documents: Any = ..., parse_special: bool = ...,
                            **kwargs: Any) -> str: ...

    @overload
    def apply_chat_template(self, messages: Sequence[Mapping[str, Any]], add_generation_prompt: bool = ...,
                            tokenize: Literal[True] = ..., *, chat_template: str | None = ...,
                            tools: Any = ..., documents: Any = ..., parse_special: bool = ...,
                            **kwargs: Any) -> list[int]: ...

    def apply_chat_template(
        self,
        messages: Sequence[Mapping[str, Any]],
        add_generation_prompt: bool = True,
        tokenize: bool = False,
        *,
        chat_template: str | None = None,
        tools: Any = None,
        documents: Any = None,
        parse_special: bool = True,
        **kwargs: Any,
    ) -> str | list[int]:
        """Render `messages` with the model's chat template, as transformers does.

        Extra `kwargs` become template variables (e.g. `enable_thinking=False`). With `tokenize=True`
        the prompt is returned as ids, encoded without adding BOS/EOS (templates write those
        themselves). `parse_special=False` (needs `tokenize=True`) keeps special-token text inside
        messages, tools, documents and kwargs from becoming special tokens: only the tokens the
        template itself writes are special. Use it for untrusted input.
        """
        source = self._template_source(chat_template, tools)
        variables: dict[str, Any] = {
            key: value
            for key, value in (("bos_token", self._bos_token), ("eos_token", self._eos_token),
                               ("unk_token", self._unk_token), ("pad_token", self._pad_token))
            if value is not None
        }
        if parse_special:
            rendered = chat.render(source, messages, add_generation_prompt=add_generation_prompt,
                                   variables={**variables, **kwargs}, tools=tools, documents=documents)
            return self.encode(rendered, add_special_tokens=False) if tokenize else rendered
        if not tokenize:
            raise ValueError("parse_special=False only has an effect with tokenize=True")
        pattern = self._special_regex
        rendered = chat.render(
            source,
            chat.mark(list(messages), pattern),
            add_generation_prompt=add_generation_prompt,
            variables={**variables, **chat.mark(kwargs, pattern)},
            tools=chat.mark(tools, pattern),
            documents=chat.mark(documents, pattern),
        )
        return self._encode_marked(rendered)

    def _encode_marked(self, rendered: str) -> list[int]:
        # Encode piece by piece: the template's own special tokens by id, the text between them with
        # special-token matching off. tokenizers itself encodes the text between special tokens as
        # separate segments, so for input without special-token text this gives the usual ids.
        pieces = chat.marked_pieces(rendered, self._special_regex)
        ids: list[int] = []
        at_start = True
        for index, (text, is_special) in enumerate(pieces):
            if is_special:
                ids.append(self._added[text][0])
                at_start = False
                continue
            # Special tokens with lstrip/rstrip swallow the whitespace next to them.
            after = pieces[index + 1] if index + 1 < len(pieces) else None
            before = pieces[index - 1] if index > 0 else None
            if after is not None and after[1] and self._added[after[0]][1].lstrip:
                text = text.rstrip()
            if before is not None and before[1] and self._added[before[0]][1].rstrip:
                text = text.lstrip()
            if not text:
                continue
            backend = self._plain_backend if at_start else self._plain_continuation_backend
            ids.extend(backend.encode_batch_fast([text], add_special_tokens=False)[0].ids)
            at_start = False
        return ids

    # --- save --------------------------------------------------------------------------------------

    def save(self, folder: str | os.PathLike[str]) -> Path:
        """Write `tokenizer.json` and `tokenizer_config.json` into `folder` (created if needed) in the
        layout `transformers.AutoTokenizer.from_pretrained(folder)` loads. Returns the folder."""
        target = Path(folder)
        target.mkdir(parents=True, exist_ok=True)
        config: dict[str, Any] = {
            "tokenizer_class": "PreTrainedTokenizerFast",
            "clean_up_tokenization_spaces": False,
            "bos_token": self._bos_token,
            "eos_token": self._eos_token,
            "pad_token": self._pad_token,
            "unk_token": self._unk_token,
        }
        if self._framing_is_flags:
            # Only when BOS/EOS is all the post-processor adds: stating the flags makes transformers
            # replace the post-processor, which would lose anything else it adds.
            config["add_bos_token"] = self._adds_bos
            config["add_eos_token"] = self._adds_eos
        if self._model_max_length is not None:
            config["model_max_length"] = self._model_max_length
        if list(self._templates) == ["default"]:
            config["chat_template"] = self._templates["default"]
        elif self._templates:
            config["chat_template"] = [{"name": n, "template": t} for n, t in self._templates.items()]

        _atomic_write(target / "tokenizer.json", self._backend.to_str(pretty=True))
        _atomic_write(target / "tokenizer_config.json", json.dumps(config, indent=2, ensure_ascii=False) + "\n")
        # transformers prefers chat_template.jinja over the config field, so a stale one from an
        # earlier save would win; keep it in step with what we just wrote.
        jinja_file = target / "chat_template.jinja"
        if jinja_file.exists():
            if self.chat_template is not None:
                _atomic_write(jinja_file, self.chat_template)
            else:
                jinja_file.unlink()
        return target


def _load_templates(folder: Path, config: Mapping[str, Any], config_file: Path) -> dict[str, str]:
    templates: dict[str, str] = {}
    value = config.get("chat_template")
    if isinstance(value, str):
        templates["default"] = value
    elif isinstance(value, list):
        for entry in value:
            if not (isinstance(entry, dict) and isinstance(entry.get("name"), str)
                    and isinstance(entry.get("template"), str)):
                raise ConfigError(
                    f"{config_file}: field chat_template entries must be {{'name': str, 'template': str}}, got {entry!r}"
                )
            templates[entry["name"]] = entry["template"]
    elif value is not None:
        raise ConfigError(f"{config_file}: field chat_template must be a string or a list, got {type(value).__name__}")

    # transformers 5 saves templates as files; when present they replace the config's templates.
    from_files: dict[str, str] = {}
    jinja_file = folder / "chat_template.jinja"
    if jinja_file.is_file():
        from_files["default"] = jinja_file.read_text(encoding="utf-8")
    extra_dir = folder / "additional_chat_templates"
    if extra_dir.is_dir():
        for path in sorted(extra_dir.glob("*.jinja")):
            from_files[path.name.removesuffix(".jinja")] = path.read_text(encoding="utf-8")
    return from_files or templates


def _generation_eos_ids(path: Path) -> list[int]:
    # generation_config.json may list several stop ids (Llama 3 Instruct: end_of_text, eom, eot).
    if not path.is_file():
        return []
    value = _read_json_object(path).get("eos_token_id")
    if value is None:
        return []
    values = value if isinstance(value, list) else [value]
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        raise ConfigError(f"{path}: field eos_token_id must be an id or a list of ids, got {value!r}")
    return list(values)


def train_bpe(texts: Iterable[str], vocab_size: int, special_tokens: Sequence[str] = ("<|endoftext|>",)) -> Tokenizer:
    """Same as `Tokenizer.train_bpe`."""
    return Tokenizer.train_bpe(texts, vocab_size, special_tokens)


def train_char(texts: Iterable[str], special_tokens: Sequence[str] = ()) -> Tokenizer:
    """Same as `Tokenizer.train_char`."""
    return Tokenizer.train_char(texts, special_tokens)
