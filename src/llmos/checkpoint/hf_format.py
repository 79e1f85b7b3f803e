"""Mapping between Hugging Face's config.json / parameter names and ours.

Our model fuses q/k/v and gate/up; Hugging Face keeps them apart (and GPT-2 stores its linear
weights transposed, as Conv1D). Everything that reads or writes a model folder goes through the
two pairs of functions here, so one mapping serves import, export and our own checkpoints.
"""

from __future__ import annotations

from typing import Any

import torch

from llmos.errors import ConfigError, ModelFormatError
from llmos.model import Config

LLAMA_LIKE = {"llama": "LlamaForCausalLM", "mistral": "MistralForCausalLM", "qwen2": "Qwen2ForCausalLM"}
SUPPORTED = ", ".join(["gpt2", *LLAMA_LIKE])
# Keys that must be present in a config.json of each family.
_REQUIRED = {
    "gpt2": ("n_embd", "n_layer", "n_head", "vocab_size"),
    "llama": ("hidden_size", "num_hidden_layers", "num_attention_heads", "vocab_size", "intermediate_size"),
}


def _require(hf: dict[str, Any], family: str, source: str) -> None:
    missing = [k for k in _REQUIRED[family] if k not in hf]
    if missing:
        raise ConfigError(f"{source}: missing field(s) {', '.join(missing)}")


def _rope_from_hf(hf: dict[str, Any], source: str) -> tuple[float, dict[str, Any] | None]:
    """Read RoPE settings in either the classic (`rope_theta` + `rope_scaling`) or the newer
    `rope_parameters` layout of config.json."""
    params = dict(hf.get("rope_parameters") or {})
    theta = float(params.get("rope_theta", hf.get("rope_theta", 10000.0)))
    scaling = dict(hf.get("rope_scaling") or {}) or params
    kind = scaling.get("rope_type", scaling.get("type", "default"))
    if kind in (None, "default"):
        return theta, None
    if kind == "linear":
        return theta, {"type": "linear", "factor": float(scaling["factor"])}
    if kind == "llama3":
        return theta, {"type": "llama3", "factor": float(scaling["factor"]),
                       "low_freq_factor": float(scaling["low_freq_factor"]),
                       "high_freq_factor": float(scaling["high_freq_factor"]),
                       "original_max_position_embeddings": int(scaling["original_max_position_embeddings"])}
    raise ConfigError(f"{source}: rope scaling type {kind!r} is not supported (supported: linear, llama3)")


def config_from_hf(hf: dict[str, Any], source: str = "config.json") -> Config:
    """Our Config from a Hugging Face config.json dict. Code references (`auto_map`) are ignored:
    we never import code that comes with a model."""
    model_type = hf.get("model_type")
    extra = {k: hf[k] for k in ("id2label", "label2id") if k in hf}
    if model_type == "gpt2":
        _require(hf, "gpt2", source)
        act = hf.get("activation_function", "gelu_new")
        if act not in ("gelu_new", "gelu_pytorch_tanh", "gelu"):
            raise ConfigError(f"{source}: activation_function {act!r} is not supported")
        return Config(
            n_layer=hf["n_layer"], n_head=hf["n_head"], n_embd=hf["n_embd"], vocab_size=hf["vocab_size"],
            intermediate_size=hf.get("n_inner") or 4 * hf["n_embd"], block_size=hf.get("n_positions", 1024),
            norm="layernorm", norm_eps=hf.get("layer_norm_epsilon", 1e-5), mlp="gelu", position="learned",
            bias=hf.get("llmos_bias", True), tie_embeddings=hf.get("tie_word_embeddings", True),
            hf_model_type="gpt2", extra=extra)
    if model_type in LLAMA_LIKE:
        _require(hf, "llama", source)
        act = hf.get("hidden_act", "silu")
        if act != "silu":
            raise ConfigError(f"{source}: hidden_act {act!r} is not supported (expected silu)")
        theta, scaling = _rope_from_hf(hf, source)
        window = hf.get("sliding_window") if model_type == "mistral" or hf.get("use_sliding_window") else None
        attention_bias = bool(hf.get("attention_bias", False))
        return Config(
            n_layer=hf["num_hidden_layers"], n_head=hf["num_attention_heads"],
            n_kv_head=hf.get("num_key_value_heads") or hf["num_attention_heads"], n_embd=hf["hidden_size"],
            head_dim=hf.get("head_dim"), vocab_size=hf["vocab_size"], intermediate_size=hf["intermediate_size"],
            block_size=hf.get("max_position_embeddings", 2048), norm="rmsnorm",
            norm_eps=hf.get("rms_norm_eps", 1e-6), mlp="swiglu", position="rope", rope_theta=theta,
            rope_scaling=scaling, bias=False, qkv_bias=model_type == "qwen2" or attention_bias,
            tie_embeddings=bool(hf.get("tie_word_embeddings", model_type != "llama")),
            sliding_window=window, hf_model_type=model_type, extra=extra)
    if model_type is None:
        raise ConfigError(f"{source}: missing field model_type")
    raise ConfigError(f"{source}: unknown architecture model_type={model_type!r} (supported: {SUPPORTED})")


def config_to_hf(config: Config) -> dict[str, Any]:
    """A config.json dict that `transformers` loads as the matching *ForCausalLM class."""
    c = config
    if c.hf_model_type == "gpt2":
        if c.mlp != "gelu" or c.position != "learned" or c.norm != "layernorm":
            raise ConfigError("config with hf_model_type gpt2 must use layernorm, gelu and learned positions")
        hf = {"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"], "n_layer": c.n_layer,
              "n_head": c.n_head, "n_embd": c.n_embd, "vocab_size": c.vocab_size, "n_positions": c.block_size,
              "n_ctx": c.block_size, "n_inner": c.intermediate_size, "layer_norm_epsilon": c.norm_eps,
              "activation_function": "gelu_new", "tie_word_embeddings": c.tie_embeddings,
              "resid_pdrop": c.dropout, "embd_pdrop": c.dropout, "attn_pdrop": c.dropout}
        if not c.bias:
            # GPT-2's format always has biases: a bias-free model (nanoGPT's) is written with zero
            # biases, which transformers computes identically, and this key restores `bias=False`.
            hf["llmos_bias"] = False
    else:
        if c.hf_model_type not in LLAMA_LIKE:
            raise ConfigError(f"hf_model_type {c.hf_model_type!r} cannot be exported (supported: {SUPPORTED})")
        if c.mlp != "swiglu" or c.position != "rope" or c.norm != "rmsnorm" or c.bias:
            raise ConfigError(f"config with hf_model_type {c.hf_model_type} must use rmsnorm, swiglu and rope")
        hf = {"model_type": c.hf_model_type, "architectures": [LLAMA_LIKE[c.hf_model_type]],
              "hidden_size": c.n_embd, "num_hidden_layers": c.n_layer, "num_attention_heads": c.n_head,
              "num_key_value_heads": c.n_kv_head, "head_dim": c.head_dim, "intermediate_size": c.intermediate_size,
              "vocab_size": c.vocab_size, "max_position_embeddings": c.block_size, "rms_norm_eps": c.norm_eps,
              "rope_theta": c.rope_theta, "hidden_act": "silu", "tie_word_embeddings": c.tie_embeddings,
              "attention_dropout": c.dropout}
        if c.rope_scaling:
            scaling = dict(c.rope_scaling)
            scaling["rope_type"] = scaling.pop("type")
            hf["rope_scaling"] = scaling
        if c.hf_model_type == "llama":
            hf["attention_bias"] = c.qkv_bias
            if c.qkv_bias:
                raise ConfigError("llama export cannot express q/k/v-only biases; use hf_model_type qwen2")
        elif c.hf_model_type == "qwen2" and not c.qkv_bias:
            raise ConfigError("qwen2 models always have q/k/v biases (qkv_bias must be true)")
        if c.sliding_window:
            hf["sliding_window"] = c.sliding_window
            hf["use_sliding_window"] = True
    hf.update(c.extra)
    hf["torch_dtype"] = "float32"
    return hf


# (our module, GPT-2's module) for every bias GPT-2 stores per layer
_GPT2_BIASES = (("norm_1", "ln_1"), ("norm_2", "ln_2"), ("attn.qkv", "attn.c_attn"), ("attn.proj", "attn.c_proj"),
                ("mlp.up", "mlp.c_fc"), ("mlp.down", "mlp.c_proj"))


def _bias(state: dict[str, torch.Tensor], module: str) -> torch.Tensor:
    """A module's bias, or zeros shaped like its output for a bias-free model."""
    if f"{module}.bias" in state:
        return state[f"{module}.bias"]
    weight = state[f"{module}.weight"]
    return torch.zeros(weight.shape[0], dtype=weight.dtype)


def _gpt2_prefix(tensors: dict[str, torch.Tensor]) -> str:
    return "transformer." if any(k.startswith("transformer.") for k in tensors) else ""


def _take(tensors: dict[str, torch.Tensor], name: str, source: str) -> torch.Tensor:
    try:
        return tensors[name]
    except KeyError:
        raise ModelFormatError(f"{source}: missing tensor {name}") from None


def state_dict_from_hf(tensors: dict[str, torch.Tensor], config: Config,
                       source: str = "model.safetensors") -> dict[str, torch.Tensor]:
    """Our parameter names and layout from Hugging Face tensors (missing tensor: clear error)."""
    c, out = config, {}

    def get(name: str) -> torch.Tensor:
        return _take(tensors, name, source)

    if c.hf_model_type == "gpt2":
        p = _gpt2_prefix(tensors)
        out["tok_emb.weight"] = get(f"{p}wte.weight")
        out["pos_emb.weight"] = get(f"{p}wpe.weight")
        for i in range(c.n_layer):
            h, b = f"{p}h.{i}.", f"blocks.{i}."
            for ours, theirs in (("norm_1", "ln_1"), ("norm_2", "ln_2")):
                out[f"{b}{ours}.weight"] = get(f"{h}{theirs}.weight")
            for ours, theirs in (("attn.qkv", "attn.c_attn"), ("attn.proj", "attn.c_proj"),
                                 ("mlp.up", "mlp.c_fc"), ("mlp.down", "mlp.c_proj")):
                out[f"{b}{ours}.weight"] = get(f"{h}{theirs}.weight").t()  # Conv1D stores [in, out]
            if c.bias:
                for ours, theirs in _GPT2_BIASES:
                    out[f"{b}{ours}.bias"] = get(f"{h}{theirs}.bias")
        out["norm.weight"] = get(f"{p}ln_f.weight")
        if c.bias:
            out["norm.bias"] = get(f"{p}ln_f.bias")
    else:
        out["tok_emb.weight"] = get("model.embed_tokens.weight")
        for i in range(c.n_layer):
            h, b = f"model.layers.{i}.", f"blocks.{i}."
            out[f"{b}norm_1.weight"] = get(f"{h}input_layernorm.weight")
            out[f"{b}norm_2.weight"] = get(f"{h}post_attention_layernorm.weight")
            qkv = [f"{h}self_attn.{n}_proj" for n in "qkv"]
            out[f"{b}attn.qkv.weight"] = torch.cat([get(f"{n}.weight") for n in qkv])
            if c.qkv_bias:
                out[f"{b}attn.qkv.bias"] = torch.cat([get(f"{n}.bias") for n in qkv])
            out[f"{b}attn.proj.weight"] = get(f"{h}self_attn.o_proj.weight")
            out[f"{b}mlp.up.weight"] = torch.cat([get(f"{h}mlp.gate_proj.weight"), get(f"{h}mlp.up_proj.weight")])
            out[f"{b}mlp.down.weight"] = get(f"{h}mlp.down_proj.weight")
        out["norm.weight"] = get("model.norm.weight")
    if not c.tie_embeddings:
        out["lm_head.weight"] = get("lm_head.weight")
    return out


def state_dict_to_hf(state: dict[str, torch.Tensor], config: Config) -> dict[str, torch.Tensor]:
    """Hugging Face names and layout for our parameters (tied lm_head left out, as HF saves it)."""
    c, out = config, {}
    if c.hf_model_type == "gpt2":
        out["transformer.wte.weight"] = state["tok_emb.weight"]
        out["transformer.wpe.weight"] = state["pos_emb.weight"]
        for i in range(c.n_layer):
            h, b = f"transformer.h.{i}.", f"blocks.{i}."
            for ours, theirs in (("norm_1", "ln_1"), ("norm_2", "ln_2")):
                out[f"{h}{theirs}.weight"] = state[f"{b}{ours}.weight"]
            for ours, theirs in (("attn.qkv", "attn.c_attn"), ("attn.proj", "attn.c_proj"),
                                 ("mlp.up", "mlp.c_fc"), ("mlp.down", "mlp.c_proj")):
                out[f"{h}{theirs}.weight"] = state[f"{b}{ours}.weight"].t()
            for ours, theirs in _GPT2_BIASES:
                out[f"{h}{theirs}.bias"] = _bias(state, f"{b}{ours}")
        out["transformer.ln_f.weight"] = state["norm.weight"]
        out["transformer.ln_f.bias"] = _bias(state, "norm")
    else:
        out["model.embed_tokens.weight"] = state["tok_emb.weight"]
        q, kv = c.n_head * c.head_dim, c.n_kv_head * c.head_dim
        for i in range(c.n_layer):
            h, b = f"model.layers.{i}.", f"blocks.{i}."
            out[f"{h}input_layernorm.weight"] = state[f"{b}norm_1.weight"]
            out[f"{h}post_attention_layernorm.weight"] = state[f"{b}norm_2.weight"]
            for part in ("weight", "bias") if c.qkv_bias else ("weight",):
                wq, wk, wv = state[f"{b}attn.qkv.{part}"].split([q, kv, kv])
                out[f"{h}self_attn.q_proj.{part}"], out[f"{h}self_attn.k_proj.{part}"] = wq, wk
                out[f"{h}self_attn.v_proj.{part}"] = wv
            out[f"{h}self_attn.o_proj.weight"] = state[f"{b}attn.proj.weight"]
            gate, up = state[f"{b}mlp.up.weight"].chunk(2)
            out[f"{h}mlp.gate_proj.weight"], out[f"{h}mlp.up_proj.weight"] = gate, up
            out[f"{h}mlp.down_proj.weight"] = state[f"{b}mlp.down.weight"]
        out["model.norm.weight"] = state["norm.weight"]
    if not c.tie_embeddings:
        out["lm_head.weight"] = state["lm_head.weight"]
    return {k: v.contiguous() for k, v in out.items()}
