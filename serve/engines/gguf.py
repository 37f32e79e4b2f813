"""Hugging Face checkpoints and PEFT LoRA adapters written as GGUF files, for llama.cpp to run.

The embedded engine runs every model through llama.cpp (``llamacpp.py``), which reads GGUF. The
shipped default's base is a GGUF already (Gemma 3 270M, Q4_K_M); ``merge_lora`` merges AgentLM's
LoRA adapter into it (the adapted matrices in Q8_0, the rest as they are). A checkpoint that training writes
(or a test builds) is converted by ``checkpoint_to_gguf``: the families AgentLM trains, Llama and
Gemma 3. For any other architecture, convert it with llama.cpp's ``convert_hf_to_gguf.py`` and
serve the .gguf file.

A converted checkpoint's GGUF carries weights, not a vocabulary: the engine tokenizes with the
checkpoint's own tokenizer, so the vocabulary written there is only placeholders of the right size.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

SUPPORTED = ("llama", "gemma3", "gemma3_text")
QUANTIZE_ABOVE = 100_000_000  # parameters: larger checkpoints get Q8_0 matrices (4x less to read a token)


class ConversionError(ValueError):
    """A checkpoint or adapter that cannot be written as GGUF, with the reason."""


def _config(checkpoint: Path) -> dict[str, Any]:
    config = json.loads((checkpoint / "config.json").read_text())
    return config.get("text_config", config) if "text_config" in config else config


def _arch(model_type: str) -> str:
    if model_type not in SUPPORTED:
        raise ConversionError(
            f"the embedded engine converts Llama and Gemma 3 checkpoints, not {model_type!r}: convert "
            "it with llama.cpp's convert_hf_to_gguf.py and serve the .gguf file (--model path.gguf)"
        )
    return "gemma3" if model_type.startswith("gemma3") else "llama"


def _rope_theta(config: dict[str, Any], layer_type: str) -> float:
    params = config.get("rope_parameters") or {}
    params = params.get(layer_type, params)
    return float(params.get("rope_theta", config.get("rope_theta", 10000.0)))


def _tensors(checkpoint: Path) -> Iterator[tuple[str, np.ndarray]]:
    from safetensors import safe_open

    files = sorted(checkpoint.glob("*.safetensors"))
    if not files:
        raise ConversionError(f"{checkpoint} has no .safetensors weights to convert")
    for file in files:
        with safe_open(file, "pt") as f:
            for name in f.keys():  # noqa: SIM118 (safe_open has no __iter__)
                yield name, f.get_tensor(name).float().numpy()


def _permute(w: np.ndarray, heads: int) -> np.ndarray:
    """Llama's q/k rows from Hugging Face's rotary layout (halves) to llama.cpp's (pairs)."""
    return w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _placeholder_vocab(writer: Any, n_vocab: int, config: dict[str, Any]) -> None:
    import gguf

    tokens = [f"[{i}]" for i in range(n_vocab)]
    tokens[-1] = "<0x0A>"  # llama.cpp's loader looks for a newline byte token
    writer.add_tokenizer_model("llama")
    writer.add_token_list(tokens)
    writer.add_token_scores([0.0] * n_vocab)
    writer.add_token_types([gguf.TokenType.NORMAL] * n_vocab)
    for key, add in (("bos_token_id", writer.add_bos_token_id), ("eos_token_id", writer.add_eos_token_id)):
        value = config.get(key)
        value = value[0] if isinstance(value, list) else value
        if isinstance(value, int) and 0 <= value < n_vocab:
            add(value)


def checkpoint_to_gguf(checkpoint: Path, out: Path) -> Path:
    """Write a Llama or Gemma 3 checkpoint's weights as a GGUF file at `out`."""
    import gguf

    config = _config(checkpoint)
    arch = _arch(str(config.get("model_type")))
    layers = int(config["num_hidden_layers"])
    heads = int(config["num_attention_heads"])
    kv_heads = int(config.get("num_key_value_heads") or heads)
    hidden = int(config["hidden_size"])
    head_dim = int(config.get("head_dim") or hidden // heads)
    names = gguf.get_tensor_name_map(
        gguf.MODEL_ARCH.GEMMA3 if arch == "gemma3" else gguf.MODEL_ARCH.LLAMA, layers
    )
    tensors = dict(_tensors(checkpoint))
    params = sum(t.size for t in tensors.values())
    quantize = params >= QUANTIZE_ABOVE

    writer = gguf.GGUFWriter(str(out), arch)
    writer.add_type(gguf.GGUFType.MODEL)
    writer.add_name(checkpoint.name)
    writer.add_context_length(int(config.get("max_position_embeddings", 4096)))
    writer.add_embedding_length(hidden)
    writer.add_block_count(layers)
    writer.add_feed_forward_length(int(config["intermediate_size"]))
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    writer.add_layer_norm_rms_eps(float(config.get("rms_norm_eps", 1e-6)))
    writer.add_key_length(head_dim)
    writer.add_value_length(head_dim)
    if arch == "gemma3":
        scalar = config.get("query_pre_attn_scalar", head_dim)
        if (
            scalar != head_dim and layers != 62
        ):  # llama.cpp scales attention by head_dim (27B: by hidden / heads)
            raise ConversionError(
                f"llama.cpp's Gemma 3 scales attention by 1/sqrt(head_dim={head_dim}); this checkpoint's "
                f"query_pre_attn_scalar is {scalar}"
            )
        types = config.get("layer_types") or [
            "full_attention" if (i + 1) % 6 == 0 else "sliding_attention" for i in range(layers)
        ]
        writer.add_sliding_window(int(config.get("sliding_window") or 0))
        writer.add_sliding_window_pattern([t == "sliding_attention" for t in types])
        writer.add_rope_freq_base(_rope_theta(config, "full_attention"))
        writer.add_rope_freq_base_swa(_rope_theta(config, "sliding_attention"))
        if config.get("final_logit_softcapping"):
            writer.add_final_logit_softcapping(float(config["final_logit_softcapping"]))
    else:
        writer.add_rope_dimension_count(head_dim)
        writer.add_rope_freq_base(_rope_theta(config, "full_attention"))
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_Q8_0 if quantize else gguf.LlamaFileType.ALL_F32)

    n_vocab = 0
    for name, data in tensors.items():
        name = name.replace("language_model.", "")
        if name.endswith("rotary_emb.inv_freq"):
            continue
        if name == "lm_head.weight" and config.get("tie_word_embeddings", arch == "gemma3"):
            continue
        target = names.get_name(name, try_suffixes=(".weight", ".bias"))
        if target is None:
            raise ConversionError(f"{checkpoint}: no GGUF name for the tensor {name}")
        if arch == "llama" and name.endswith("q_proj.weight"):
            data = _permute(data, heads)
        elif arch == "llama" and name.endswith("k_proj.weight"):
            data = _permute(data, kv_heads)
        if arch == "gemma3" and name.endswith("norm.weight"):
            data = data + 1.0  # llama.cpp's Gemma norm multiplies by the weight, HF's by 1 + weight
        if target == "token_embd.weight":
            n_vocab = data.shape[0]
        if quantize and data.ndim == 2 and data.shape[1] % 32 == 0:
            writer.add_tensor(target, gguf.quants.quantize(data, gguf.GGMLQuantizationType.Q8_0),
                              raw_dtype=gguf.GGMLQuantizationType.Q8_0)  # fmt: skip
        else:
            writer.add_tensor(target, np.ascontiguousarray(data, dtype=np.float32))
    _placeholder_vocab(writer, n_vocab, config)
    _write(writer)
    return out


def merge_lora(base: Path, adapter: Path, out: Path) -> Path:
    """Write the GGUF model `base` with the PEFT LoRA `adapter` merged into its weights, at `out`.

    Every tensor the adapter does not touch is copied as it is (quantized bytes included). An
    adapted one becomes its base weights, dequantized, plus the adapter's scaled B @ A: kept in
    float when the base's tensor is float, else quantized to Q8_0 (an error of about 0.4 % of a
    block's largest weight, well below the Q4/Q5 base's own and the adapter's deltas)."""
    import gguf
    from safetensors.numpy import load_file

    config = json.loads((adapter / "adapter_config.json").read_text())
    if config.get("peft_type", "LORA") != "LORA" or config.get("use_dora") or config.get("modules_to_save"):
        raise ConversionError(
            f"{adapter}: only plain LoRA adapters (no DoRA, no modules_to_save) can be merged"
        )
    if config.get("use_rslora") or config.get("rank_pattern") or config.get("alpha_pattern"):
        raise ConversionError(f"{adapter}: rsLoRA and per-module ranks or alphas are not supported")
    reader = gguf.GGUFReader(str(base))
    arch = str(reader.fields["general.architecture"].contents())
    if arch not in ("llama", "gemma3"):
        raise ConversionError(
            f"{base}: merging adapters into {arch!r} models is not supported (Llama, Gemma 3)"
        )
    layers = int(reader.fields[f"{arch}.block_count"].contents())
    heads = int(reader.fields[f"{arch}.attention.head_count"].contents())
    kv_heads = int(reader.fields[f"{arch}.attention.head_count_kv"].contents())
    names = gguf.get_tensor_name_map(
        gguf.MODEL_ARCH.GEMMA3 if arch == "gemma3" else gguf.MODEL_ARCH.LLAMA, layers
    )
    weights = load_file(str(adapter / "adapter_model.safetensors"))
    scale = float(config["lora_alpha"]) / float(config["r"])
    deltas: dict[str, np.ndarray] = {}
    for name in weights:
        module, _, part = name.rpartition(".lora_")  # "<module>.lora_A.weight"
        if part not in ("A.weight", "B.weight"):
            raise ConversionError(f"{adapter}: unexpected tensor {name}")
        if part == "B.weight":
            continue
        module_name = module.removeprefix("base_model.model.").replace("language_model.", "")
        target = names.get_name(module_name + ".weight", try_suffixes=(".weight",))
        if target is None:
            raise ConversionError(f"{adapter}: no GGUF name for the adapted module {module_name}")
        a = weights[name].astype(np.float32)
        b = weights[f"{module}.lora_B.weight"].astype(np.float32)
        delta = scale * (b @ a)
        if arch == "llama" and module_name.endswith(("q_proj", "k_proj")):  # the base's rows are permuted so
            delta = _permute(delta, heads if module_name.endswith("q_proj") else kv_heads)
        deltas[target] = delta

    writer = gguf.GGUFWriter(str(out), arch)
    for key, field in reader.fields.items():
        if key.startswith("GGUF.") or key == "general.architecture":
            continue  # the writer writes these itself
        kind = field.types[0]
        sub = {"sub_type": field.types[-1]} if kind == gguf.GGUFValueType.ARRAY else {}
        writer.add_key_value(key, field.contents(), kind, **sub)
    floats = (gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16, gguf.GGMLQuantizationType.BF16)
    for tensor in reader.tensors:
        delta = deltas.pop(tensor.name, None)
        if delta is None:
            writer.add_tensor(tensor.name, np.array(tensor.data), raw_dtype=tensor.tensor_type)
            continue
        merged = gguf.quants.dequantize(tensor.data, tensor.tensor_type).reshape(delta.shape) + delta
        if tensor.tensor_type in floats:
            writer.add_tensor(tensor.name, merged.astype(np.float32))
        else:
            q8 = gguf.GGMLQuantizationType.Q8_0
            writer.add_tensor(tensor.name, gguf.quants.quantize(merged.astype(np.float32), q8), raw_dtype=q8)
    if deltas:
        raise ConversionError(f"{adapter} adapts tensors {base} does not have: {', '.join(sorted(deltas))}")
    _write(writer)
    return out


def _write(writer: Any) -> None:
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
