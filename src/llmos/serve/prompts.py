"""Request prompts to token ids: completion prompts, chat messages and embedding inputs.

Chat content is untrusted text: it is encoded with special-token parsing off, so a user who types
`<|im_end|>` gets those characters, not the end-of-turn token (only the template writes specials).
Completion prompts are the caller's own raw prompt, so special-token text there means the token,
as in llama.cpp and vLLM. Token-id prompts are used as given (no start token is added).
"""

from __future__ import annotations

from typing import Any

from llmos.errors import LlmosError
from llmos.serve.errors import BadRequest, ContextLengthExceeded
from llmos.serve.schemas import ChatMessage


def split_prompts(prompt: Any, param: str, max_prompts: int) -> list[str | list[int]]:
    """`prompt` as a list of prompts, each a string or a list of token ids."""
    if isinstance(prompt, str):
        prompts: list[Any] = [prompt]
    elif prompt and all(isinstance(p, int) for p in prompt):
        prompts = [prompt]
    else:
        prompts = list(prompt)
    if not prompts:
        raise BadRequest(f"{param} must not be empty", param=param)
    if len(prompts) > max_prompts:
        raise BadRequest(f"{param} holds {len(prompts)} prompts; the limit is {max_prompts}", param=param)
    return prompts


def encode_prompt(tokenizer: Any, vocab_size: int, prompt: str | list[int], param: str) -> list[int]:
    if isinstance(prompt, str):
        try:
            ids = tokenizer.encode(prompt, add_special_tokens=True)
        except LlmosError as e:
            raise BadRequest(str(e), param=param) from None
    else:
        ids = list(prompt)
        bad = next((t for t in ids if not 0 <= t < vocab_size), None)
        if bad is not None:
            raise BadRequest(f"token id {bad} in {param} is out of vocabulary (vocab size {vocab_size})",
                             param=param, code="out_of_vocabulary")
    if not ids:
        raise BadRequest(f"{param} is empty: at least one token is needed", param=param)
    return ids


def message_text(message: ChatMessage, index: int) -> str:
    content = message.content
    if content is None:
        if message.role == "assistant":
            return ""
        raise BadRequest(f"messages[{index}].content is required for role {message.role!r}", param="messages")
    if isinstance(content, str):
        return content
    texts = []
    for part in content:
        if part.type != "text" or part.text is None:
            # Never fetched: this server takes text only and makes no outbound connections.
            raise BadRequest(f"messages[{index}]: content part type {part.type[:40]!r} is not supported; "
                             "only text parts are accepted", param="messages")
        texts.append(part.text)
    return "\n".join(texts)


def chat_messages(messages: list[ChatMessage]) -> list[dict[str, str]]:
    # "developer" is OpenAI's newer name for "system"; chat templates only know the latter.
    return [{"role": "system" if m.role == "developer" else m.role, "content": message_text(m, i)}
            for i, m in enumerate(messages)]


def encode_chat(tokenizer: Any, messages: list[ChatMessage], add_generation_prompt: bool = True) -> list[int]:
    try:
        return tokenizer.apply_chat_template(chat_messages(messages), add_generation_prompt=add_generation_prompt,
                                             tokenize=True, parse_special=False)
    except LlmosError as e:
        raise BadRequest(f"cannot apply the chat template: {e}", param="messages") from None
    except Exception as e:  # the tokenizers library raises plain Exceptions for text it cannot encode
        raise BadRequest(f"the model's tokenizer cannot encode these messages: {str(e)[:200]}",
                         param="messages") from None


def check_length(prompt_len: int, max_tokens: int, context: int, param: str) -> None:
    """400 context_length_exceeded when the prompt, or prompt plus max_tokens, does not fit."""
    if prompt_len >= context:
        raise ContextLengthExceeded(
            f"prompt is too long: {prompt_len} tokens, the model's context length is {context} tokens",
            param=param)
    if prompt_len + max_tokens > context:
        raise ContextLengthExceeded(
            f"prompt is too long for the requested completion: {prompt_len} prompt tokens + "
            f"{max_tokens} max_tokens = {prompt_len + max_tokens} exceeds the model's context length of "
            f"{context} tokens; reduce the prompt or max_tokens", param=param)
