"""The real default model: SmolLM2-135M-Instruct imported by llmos against transformers' own
fp32 load of the same GGUF (the reference)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import transformers

from llmos.checkpoint import export_hf, load_pretrained
from llmos.engine import LLM, SamplingParams, generate_tokens

pytestmark = pytest.mark.slow

PARAGRAPH_CHARS = 3000


@pytest.fixture(scope="module")
def ours(smollm2_dir: Path):
    return load_pretrained(smollm2_dir)


@pytest.fixture(scope="module")
def paragraph_ids(ours, shared_data: Path) -> torch.Tensor:
    text = (shared_data / "wikitext2" / "wiki.test.tokens").read_text()[:PARAGRAPH_CHARS]
    return torch.tensor([ours.tokenizer.encode(text)])


def test_logits_match_transformers(ours, hf_smollm2, paragraph_ids: torch.Tensor) -> None:
    ref, _ = hf_smollm2
    assert paragraph_ids.shape[1] > 500
    with torch.no_grad():
        expected = ref(paragraph_ids).logits
        got = ours.model(paragraph_ids)
    assert (got - expected).abs().max().item() < 2e-3


def test_greedy_chat_matches_transformers(smollm2_dir: Path, hf_smollm2) -> None:
    ref, ref_tok = hf_smollm2
    messages = [{"role": "user", "content": "Write a short story about a robot who learns to paint."}]
    llm = LLM.load(smollm2_dir)
    prompt = llm.chat_prompt(messages)
    assert prompt == ref_tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True,
                                                 return_dict=False)
    params = SamplingParams(max_new_tokens=64, temperature=0.0)
    ours = list(generate_tokens(llm.model, prompt, params, llm.tokenizer.eos_ids))
    with torch.no_grad():
        out = ref.generate(torch.tensor([prompt]), max_new_tokens=64, do_sample=False)
    assert len(ours) == 64  # the story is longer than 64 tokens: no early end-of-turn
    assert ours == out[0, len(prompt):].tolist()


def test_perplexity_on_tiny_shakespeare(ours, hf_smollm2, shared_data: Path) -> None:
    ref, _ = hf_smollm2
    text = (shared_data / "tinyshakespeare.txt").read_text()[:20000]
    ids = torch.tensor([ours.tokenizer.encode(text)[:2000]])
    with torch.no_grad():
        nll = torch.nn.functional.cross_entropy(ours.model(ids)[0, :-1], ids[0, 1:])
        ref_nll = torch.nn.functional.cross_entropy(ref(ids).logits[0, :-1], ids[0, 1:])
    ppl, ref_ppl = math.exp(nll.item()), math.exp(ref_nll.item())
    assert abs(ref_ppl - 36.78) < 0.05  # the reference figure measured on this machine
    assert abs(ppl - ref_ppl) / ref_ppl < 0.005


def test_export_loads_in_transformers(smollm2_dir: Path, ours, tmp_path: Path, paragraph_ids) -> None:
    out = export_hf(smollm2_dir, tmp_path / "hf")
    model = transformers.AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    tok = transformers.AutoTokenizer.from_pretrained(out)
    ids = paragraph_ids[:, :256]
    with torch.no_grad():
        diff = (model(ids).logits - ours.model(ids)).abs().max().item()
    assert diff < 1e-4
    text = "To be, or not to be: that is the question."
    assert tok(text)["input_ids"] == ours.tokenizer.encode(text)
