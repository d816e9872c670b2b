"""A Llama-architecture transformers directory -> one GGUF file, on top of the `gguf` library.

No converter on PyPI was fit to depend on (docs/export.md says what was found and why), so
this follows llama.cpp's `convert_hf_to_gguf.py` (LlamaModel and TextModel) for the one
architecture we fine-tune: hyperparameters under llama.* keys, tensor names from
`gguf.get_tensor_name_map`, q_proj/k_proj rows permuted the way llama.cpp's rotary embedding
wants them (transformers' GGUF loader undoes it), a byte-level BPE vocabulary with its merges
and special tokens (`gguf.SpecialVocab`), and the chat template under tokenizer.chat_template.
The file is loaded back by `check_gguf` and must generate what the safetensors model does.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from tuneforge.errors import UnsupportedError

if TYPE_CHECKING:
    import numpy as np
    from transformers import PreTrainedTokenizerBase

logger = logging.getLogger(__name__)

GGUF_FILE = "model.gguf"
OutType = Literal["f32", "f16"]
_FEATURE = "GGUF export"


def write_gguf(
    model_dir: Path, tokenizer: PreTrainedTokenizerBase, path: Path, *, outtype: OutType,
    name: str, add_bos: bool,
) -> None:
    """Write the model saved in `model_dir`, with `tokenizer` and its chat template, to `path`.

    `add_bos` tells llama.cpp and Ollama to put the BOS token before the prompt (the template
    put it there in training).

    Raises:
        UnsupportedError: not a Llama-architecture model, or a tokenizer llama.cpp cannot be
            told how to split (see `pre_tokenizer_name`).
    """
    import gguf
    from safetensors import safe_open
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(str(model_dir), local_files_only=True)
    _check_architecture(config)
    pre = pre_tokenizer_name(tokenizer)
    writer = gguf.GGUFWriter(str(path), gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.LLAMA])
    writer.add_type(gguf.GGUFType.MODEL)
    writer.add_name(name)
    _add_hyperparameters(writer, config, outtype)
    _add_vocabulary(writer, tokenizer, model_dir, config.vocab_size, pre, add_bos)

    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, config.num_hidden_layers)
    head_dim = _head_dim(config)
    for file in sorted(model_dir.glob("*.safetensors")):
        with safe_open(str(file), framework="pt") as tensors:
            for key in tensors.keys():  # noqa: SIM118 (safe_open is not a dict)
                if key == "lm_head.weight" and config.tie_word_embeddings:
                    continue
                gguf_name = names.get_name(key, try_suffixes=(".weight", ".bias"))
                if gguf_name is None:
                    raise UnsupportedError(_FEATURE, f"{file.name}: no GGUF name for tensor {key}")
                data = tensors.get_tensor(key).float()
                if key.endswith("q_proj.weight"):
                    data = permute_rows(data, config.num_attention_heads, head_dim)
                elif key.endswith("k_proj.weight"):
                    data = permute_rows(data, config.num_key_value_heads, head_dim)
                writer.add_tensor(gguf_name, _as_numpy(data, outtype))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def check_convertible(model_dir: Path, tokenizer: PreTrainedTokenizerBase) -> None:
    """Raise UnsupportedError now if `write_gguf` could not convert this model (no weights read).

    Raises:
        UnsupportedError: see `write_gguf`.
    """
    from transformers import AutoConfig

    _check_architecture(AutoConfig.from_pretrained(str(model_dir), local_files_only=True))
    pre_tokenizer_name(tokenizer)


def permute_rows(weight: Any, n_heads: int, head_dim: int) -> Any:
    """llama.cpp's LlamaModel.permute: per head, rotary pairs (i, i + d/2) become adjacent rows.

    transformers' rotary embedding rotates the two halves of each head; llama.cpp's rotates
    neighbouring pairs, so the rows of q_proj and k_proj are interleaved to match.
    """
    return (weight.reshape(n_heads, 2, head_dim // 2, *weight.shape[1:])
            .swapaxes(1, 2).reshape(weight.shape))


def pre_tokenizer_name(tokenizer: PreTrainedTokenizerBase) -> str:
    """llama.cpp's name (tokenizer.ggml.pre) for how this byte-level BPE splits text.

    Read from the tokenizer's own pre-tokenizer, so the GGUF splits as training did:
    GPT-2's regex is "gpt-2", digits split one by one before it is "smollm" (llama.cpp's
    regexes for both are in its llama-vocab.cpp), and a Split regex is named after
    transformers' table of the regexes llama.cpp's names stand for.

    Raises:
        UnsupportedError: not a byte-level BPE, or a pre-tokenizer with no llama.cpp name.
    """
    spec = json.loads(tokenizer.backend_tokenizer.to_str())
    if spec["model"]["type"] != "BPE" or (spec.get("decoder") or {}).get("type") != "ByteLevel":
        raise UnsupportedError(
            _FEATURE, "only byte-level BPE tokenizers (GPT-2 style: SmolLM2, Llama 3, Qwen) are "
            f"converted, got a {spec['model']['type']} model with a "
            f"{(spec.get('decoder') or {}).get('type')} decoder")
    pre = spec.get("pre_tokenizer") or {}
    steps = pre.get("pretokenizers", [pre]) if pre.get("type") == "Sequence" else [pre]
    kinds = [step.get("type") for step in steps]
    if kinds == ["ByteLevel"] and steps[0].get("use_regex", True):
        return "gpt-2"
    if kinds == ["Digits", "ByteLevel"] and steps[0].get("individual_digits") \
            and steps[1].get("use_regex", True):
        return "smollm"
    if kinds == ["Split", "ByteLevel"] and not steps[1].get("use_regex", True):
        from transformers.integrations.gguf.gguf_tokenizer_mapping import (
            GGUF_PRE_TOKENIZER_SPLITS,
        )

        pattern = (steps[0].get("pattern") or {}).get("Regex")
        for name, regex in GGUF_PRE_TOKENIZER_SPLITS.items():
            if regex == pattern:
                return name
    raise UnsupportedError(
        _FEATURE, f"llama.cpp has no name for the pre-tokenizer {json.dumps(pre)[:200]}",
        hint="a GGUF without the right tokenizer.ggml.pre tokenizes differently from training",
    )


def _check_architecture(config: Any) -> None:
    architectures = getattr(config, "architectures", None) or []
    if config.model_type != "llama" or architectures not in ([], ["LlamaForCausalLM"]):
        raise UnsupportedError(
            _FEATURE, f"only Llama-architecture models (SmolLM2, Llama, TinyLlama) are "
            f"converted, got model_type {config.model_type!r} ({', '.join(architectures)})",
            hint="export with --format safetensors and convert with llama.cpp's "
            "convert_hf_to_gguf.py",
        )
    rope = getattr(config, "rope_parameters", None) or {}
    if rope.get("rope_type", "default") != "default":
        raise UnsupportedError(_FEATURE, f"rope_type {rope['rope_type']!r} is not converted")
    if getattr(config, "attention_bias", False) or getattr(config, "mlp_bias", False):
        raise UnsupportedError(_FEATURE, "attention or MLP biases are not converted")


def _head_dim(config: Any) -> int:
    return getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads


def _add_hyperparameters(writer: Any, config: Any, outtype: OutType) -> None:
    import gguf

    rope = getattr(config, "rope_parameters", None) or {}
    head_dim = _head_dim(config)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_rope_freq_base(float(rope.get("rope_theta", 10000.0)))
    writer.add_rope_dimension_count(head_dim)
    writer.add_key_length(head_dim)
    writer.add_value_length(head_dim)
    writer.add_vocab_size(config.vocab_size)
    file_type = gguf.LlamaFileType.ALL_F32 if outtype == "f32" else gguf.LlamaFileType.MOSTLY_F16
    writer.add_file_type(file_type)
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)


def _add_vocabulary(
    writer: Any, tokenizer: PreTrainedTokenizerBase, model_dir: Path, n_vocab: int, pre: str,
    add_bos: bool,
) -> None:
    """Tokens in id order with their types (as convert_hf_to_gguf's get_vocab_base), merges,
    special token ids and the chat template (gguf.SpecialVocab reads the saved tokenizer)."""
    import gguf

    vocab = tokenizer.get_vocab()
    if len(vocab) > n_vocab:
        raise UnsupportedError(
            _FEATURE, f"the tokenizer has {len(vocab)} tokens but the model embeds {n_vocab}")
    by_id = {i: token for token, i in vocab.items()}
    added = tokenizer.added_tokens_decoder
    tokens: list[str] = []
    types: list[int] = []
    for i in range(n_vocab):
        if i not in by_id:
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
        else:
            tokens.append(by_id[i])
            types.append(gguf.TokenType.NORMAL if i not in added else
                         gguf.TokenType.CONTROL if added[i].special else
                         gguf.TokenType.USER_DEFINED)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre)
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    special = gguf.SpecialVocab(model_dir, load_merges=True, n_vocab=n_vocab)
    special.add_special_token = {"bos": add_bos, "eos": False}
    special.chat_template = tokenizer.chat_template or None
    special.add_to_gguf(writer, quiet=True)


def _as_numpy(data: Any, outtype: OutType) -> np.ndarray:
    """float32, or float16 for tensors of two or more dimensions (norms stay float32)."""
    import torch

    if outtype == "f16" and data.dim() > 1:
        data = data.to(torch.float16)
    return data.contiguous().numpy()
