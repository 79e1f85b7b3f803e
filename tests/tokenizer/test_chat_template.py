"""Chat-template rendering: the Jinja environment must behave like transformers'."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest

from llmos.tokenizer import ChatTemplateError, Tokenizer

# Exercises what real templates use: namespace, loop controls, tojson with indent, raise_exception,
# strftime_now, tools/documents presence checks, extra kwargs, {% generation %} blocks, trimming.
TEMPLATE = """
{%- set ns = namespace(count=0) -%}
{%- if tools is not none %}
TOOLS:{{ tools | tojson(indent=2) }}
{% endif %}
{%- for m in messages %}
    {%- if m.role not in ['system', 'user', 'assistant'] %}{{ raise_exception('bad role ' + m.role) }}{% endif %}
    {%- set ns.count = ns.count + 1 %}
    {%- if m.role == 'assistant' %}
<A>{% generation %}{{ m.content }}{% endgeneration %}</A>
    {%- else %}
<{{ m.role }}>{{ m.content if m.content is string else m.content | tojson }}
    {%- endif %}
    {%- if m.reasoning_content is defined %} [{{ m.reasoning_content }}]{% endif %}
    {%- if loop.index == 10 %}{% break %}{% endif %}
{% endfor %}
n={{ ns.count }} think={{ enable_thinking | default('unset') }} day={{ strftime_now('%Y') }}
{%- if add_generation_prompt %}
<A>{% endif %}
"""

MESSAGES: list[dict[str, Any]] = [
    {"role": "system", "content": "Use <b>tags</b> & \"quotes\"."},
    {"role": "user", "content": [{"type": "text", "text": "héllo <x>"}]},
    {"role": "assistant", "content": "hi", "thinking": "hmm", "tool_calls": None},
]
TOOLS = [{"type": "function", "function": {"name": "f", "description": "a < b & c"}}]


@pytest.fixture(scope="module")
def tok() -> Tokenizer:
    chars = Tokenizer.train_char(["abc"], special_tokens=["<|end|>"])
    return Tokenizer(chars.backend, eos_token="<|end|>", chat_template=TEMPLATE)


def test_render_features(tok: Tokenizer) -> None:
    out = tok.apply_chat_template(MESSAGES, tools=TOOLS, enable_thinking=False)
    assert '"description": "a < b & c"' in out  # tojson does not HTML-escape
    assert '\n  {\n    "type": "function"' in out  # indent honoured
    assert '[{"type": "text", "text": "héllo <x>"}]' in out  # ensure_ascii=False
    assert "<A>hi</A> [hmm]" in out  # generation block renders; "thinking" aliased to reasoning_content
    assert "n=3 think=False" in out
    assert f"day={datetime.now().year}" in out
    assert out.endswith("<A>")
    no_tools = tok.apply_chat_template(MESSAGES[:1], add_generation_prompt=False)
    assert "TOOLS" not in no_tools and "think=unset" in no_tools and not no_tools.endswith("<A>")


def test_raise_exception_becomes_chat_template_error(tok: Tokenizer) -> None:
    with pytest.raises(ChatTemplateError, match="bad role tool"):
        tok.apply_chat_template([{"role": "tool", "content": "x"}])


def test_sandbox_blocks_attribute_escape(tok: Tokenizer) -> None:
    evil = "{{ messages.__class__.__mro__[1].__subclasses__() }}"
    with pytest.raises(ChatTemplateError):
        tok.apply_chat_template([{"role": "user", "content": "x"}], chat_template=evil)
    with pytest.raises(ChatTemplateError, match="syntax error"):
        tok.apply_chat_template([{"role": "user", "content": "x"}], chat_template="{% for %}")


def test_parse_special_false_needs_tokenize(tok: Tokenizer) -> None:
    with pytest.raises(ValueError, match="tokenize=True"):
        tok.apply_chat_template(MESSAGES, parse_special=False)


@pytest.mark.slow
def test_same_output_as_transformers_renderer(tok: Tokenizer) -> None:
    from transformers.utils.chat_template_utils import render_jinja_template

    for kwargs in ({"tools": TOOLS, "enable_thinking": True}, {}):
        for prompt in (True, False):
            ref, _ = render_jinja_template(
                [MESSAGES], chat_template=TEMPLATE, add_generation_prompt=prompt, **kwargs
            )
            ours = tok.apply_chat_template(MESSAGES, add_generation_prompt=prompt, **kwargs)
            # transformers would also pass eos_token; this template does not read it.
            assert ours == ref[0]
