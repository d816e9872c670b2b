"""A lean decoding step for Llama-family models (Llama, Mistral, Qwen2, SmolLM).

A decoding step feeds one token per row. Through transformers' modules it costs about 60
small tensor operations and a dozen Python module calls per layer, on top of the matrix
products; on this project's 2-core CPUs that overhead was a third of a batch-1 step of
SmolLM2-135M. `FastDecoder.step` computes the same layer with about 25 operations: q, k and
v in one matrix product, gate and up in another, the rotary embedding of q and k at once,
the fused RMSNorm kernel, and attention through SDPA on the engine's cache buffers, the
query heads that share a key/value head passed as that head's query rows (so no key is
repeated). vLLM and llama.cpp do the same fusions; transformers does not expose them.

Prefill (many tokens per row) stays on transformers' forward, which it writes to the same
cache: there the matrix products dominate. LoRA rows work as PEFT's mixed-batch forward
does: each adapter's rows get `scaling * B(A(x))` added to the base projection's output.
`FastDecoder.build` returns None for a model this step does not reproduce (another
architecture, biases in the MLP, a sliding window), and `supports` is False for an adapter
with LoRA outside the projections; those decode through transformers. The engine also
checks the step against transformers' forward once at start-up and falls back if they
disagree.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tuneforge.serve.prompts import BASE

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

# architectures whose decoder layer is exactly: RMSNorm -> attention (q, k, v, o; rotary) ->
# residual -> RMSNorm -> SiLU-gated MLP -> residual, with optional q/k/v biases
SUPPORTED = {"llama", "mistral", "qwen2"}



@dataclass
class _Layer:
    qkv: Any  # callable: x -> [rows, (heads + 2 * kv_heads) * head_dim]
    o: Any
    gate_up: Any  # x -> [rows, 2 * intermediate]
    down: Any
    norm_in: torch.Tensor
    norm_post: torch.Tensor
    modules: dict[str, Any]  # q_proj, k_proj, ... as transformers holds them (LoRA lives there)


class FastDecoder:
    """One decoding step of a Llama-family causal LM, reading and writing the engine's cache.

    `linear(weight, bias)` turns a float32 weight into a callable `x -> x @ weight.T + bias`
    (the engine's packed float16 or oneDNN forward), so the fused weights are multiplied the
    same way as the engine's own linears.
    """

    def __init__(self, model: Any, layers: list[_Layer], eps: float, heads: int,
                 kv_heads: int, head_dim: int, intermediate: int) -> None:
        self._model = model  # the transformers model (the base: PEFT wraps its modules)
        self._layers = layers
        self._eps = eps
        self._heads, self._kv_heads, self._head_dim = heads, kv_heads, head_dim
        self._intermediate = intermediate
        inner = model.model
        self._embed, self._norm, self._rotary = inner.embed_tokens, inner.norm, inner.rotary_emb
        self._scale = float(getattr(model.model.layers[0].self_attn, "scaling",
                                    head_dim ** -0.5))
        self._plain: dict[str, bool] = {}  # adapter name -> a plain LoRA this step applies

    @classmethod
    def build(cls, model: Any, linear: Any) -> FastDecoder | None:
        """A decoder for `model` (a transformers CausalLM, not yet wrapped by PEFT), or None
        where this step would not reproduce its forward."""
        import torch

        config = model.config
        if getattr(config, "model_type", None) not in SUPPORTED \
                or getattr(config, "hidden_act", None) != "silu" \
                or getattr(config, "mlp_bias", False) \
                or getattr(config, "pretraining_tp", 1) != 1 \
                or getattr(config, "sliding_window", None) and \
                getattr(config, "use_sliding_window", True) \
                or not hasattr(model, "model") or not hasattr(model.model, "rotary_emb"):
            return None
        layers = []
        for layer in model.model.layers:
            attn, mlp = layer.self_attn, layer.mlp
            projections = [attn.q_proj, attn.k_proj, attn.v_proj]
            if any(type(p) is not torch.nn.Linear for p in
                   [*projections, attn.o_proj, mlp.gate_proj, mlp.up_proj, mlp.down_proj]):
                return None
            biases = [p.bias for p in projections]
            bias = None if all(b is None for b in biases) else torch.cat(
                [b.detach() if b is not None else p.weight.new_zeros(p.out_features)
                 for b, p in zip(biases, projections, strict=True)])
            layers.append(_Layer(
                qkv=linear(torch.cat([p.weight.detach() for p in projections]), bias),
                o=attn.o_proj.forward,  # the engine's own (packed) forward
                gate_up=linear(torch.cat([mlp.gate_proj.weight.detach(),
                                          mlp.up_proj.weight.detach()]), None),
                down=mlp.down_proj.forward,
                norm_in=layer.input_layernorm.weight.detach(),
                norm_post=layer.post_attention_layernorm.weight.detach(),
                modules=_projections(layer)))
        first = model.model.layers[0].self_attn
        return cls(model, layers, float(model.model.norm.variance_epsilon),
                   int(config.num_attention_heads), int(config.num_key_value_heads),
                   int(first.head_dim), int(config.intermediate_size))

    def rebind(self, model: Any) -> None:
        """Look the projections up again in `model` (after PEFT wrapped or unwrapped them)."""
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        for layer, module in zip(self._layers, base.model.layers, strict=True):
            layer.modules = _projections(module)
        self._plain.clear()

    def supports(self, adapters: list[str]) -> bool:
        """Whether every named adapter is a plain LoRA this step applies: no DoRA, and LoRA
        only on the projections (an adapter that also changes the embedding, the norms or
        the head goes through transformers' forward)."""
        import torch

        for name in set(adapters) - {BASE}:
            if name not in self._plain:
                modules = [m for layer in self._layers for m in layer.modules.values()]
                known = {id(m) for m in modules}
                self._plain[name] = not any(
                    name in getattr(m, "lora_A", {}) and (
                        m.use_dora.get(name, False) or type(m.lora_A[name]) is not
                        torch.nn.Linear or type(m.lora_B[name]) is not torch.nn.Linear)
                    for m in modules) and not any(
                    name in getattr(m, "lora_A", {}) or name in getattr(m, "modules_to_save", {})
                    or name in getattr(m, "lora_embedding_A", {})
                    for m in self._model.modules() if id(m) not in known)
            if not self._plain[name]:
                return False
        return True

    def step(self, tokens: torch.Tensor, positions: torch.Tensor, mask: torch.Tensor,
             cache: Any, adapters: list[str]) -> torch.Tensor:
        """Logits [rows, vocab] of the next token after `tokens` [rows].

        positions: [rows] each token's position; mask: [rows, columns] bool, True where a row
        attends (the cache's columns plus this step's); cache: the engine's cache, whose
        layers' `update` appends this step's keys and values and returns the whole of them.
        """
        import torch
        import torch.nn.functional as F

        rows = tokens.shape[0]
        heads, kv, dim = self._heads, self._kv_heads, self._head_dim
        groups = _adapter_rows(adapters)
        with torch.inference_mode():
            x = self._embed(tokens)  # [rows, hidden]
            cos, sin = self._rotary(x, positions[:, None])  # [rows, 1, dim]
            # rotate_half(t) * sin == roll(t, half) * (sin with its first half negated)
            half = dim // 2
            sin = torch.cat((-sin[..., :half], sin[..., half:]), dim=-1)
            # one additive mask for all layers (a bool mask is converted in every call)
            attend = torch.zeros(mask.shape, dtype=x.dtype).masked_fill_(
                ~mask, float("-inf"))[:, None, None, :]
            group = heads // kv
            for index, layer in enumerate(self._layers):
                h = F.rms_norm(x, x.shape[-1:], layer.norm_in, self._eps)
                qkv = layer.qkv(h)
                _add_lora(qkv, h, layer.modules, ("q_proj", "k_proj", "v_proj"), groups)
                qk = qkv[:, :(heads + kv) * dim].view(rows, heads + kv, dim)
                qk = torch.addcmul(qk * cos, qk.roll(half, dims=-1), sin)
                # the query heads sharing a key/value head are that head's query rows, so
                # attention reads each key once (query head h uses key head h // group)
                q = qk[:, :heads].view(rows, kv, group, dim)
                k = qk[:, heads:, None, :]
                v = qkv[:, (heads + kv) * dim:].view(rows, kv, 1, dim)
                keys, values = cache.layers[index].update(k, v)
                a = F.scaled_dot_product_attention(q, keys, values, attn_mask=attend,
                                                   scale=self._scale)
                a = a.view(rows, heads * dim)
                o = layer.o(a)
                _add_lora(o, a, layer.modules, ("o_proj",), groups)
                x = x + o
                h = F.rms_norm(x, x.shape[-1:], layer.norm_post, self._eps)
                gu = layer.gate_up(h)
                _add_lora(gu, h, layer.modules, ("gate_proj", "up_proj"), groups)
                m = F.silu(gu[:, :self._intermediate]) * gu[:, self._intermediate:]
                d = layer.down(m)
                _add_lora(d, m, layer.modules, ("down_proj",), groups)
                x = x + d
            x = self._norm(x)
            return self._model.lm_head(x)


def _projections(layer: Any) -> dict[str, Any]:
    """A decoder layer's seven projections by name, as transformers (or PEFT) holds them."""
    attn, mlp = layer.self_attn, layer.mlp
    return {name: getattr(attn if name in ("q_proj", "k_proj", "v_proj", "o_proj") else mlp, name)
            for name in ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                         "down_proj")}


def _adapter_rows(adapters: list[str]) -> list[tuple[str, torch.Tensor]]:
    """(adapter, its row indices) for each adapter other than the base in the batch."""
    import torch

    rows: dict[str, list[int]] = {}
    for row, name in enumerate(adapters):
        if name != BASE:
            rows.setdefault(name, []).append(row)
    return [(name, torch.tensor(index)) for name, index in rows.items()]


def _add_lora(out: torch.Tensor, x: torch.Tensor, modules: dict[str, Any],
              names: tuple[str, ...], groups: list[tuple[str, torch.Tensor]]) -> None:
    """Add each adapter's `scaling * B(A(x))` for its rows to the columns of `out` that
    projections `names` (concatenated in this order) produce, as PEFT's LoRA layers do."""
    if not groups:
        return
    start = 0
    for name in names:
        module = modules[name]
        width = module.out_features
        for adapter, index in groups:
            if adapter in getattr(module, "lora_A", {}):
                inputs = x.index_select(0, index)
                delta = module.lora_B[adapter](module.lora_A[adapter](inputs))
                out[index, start:start + width] += delta * module.scaling[adapter]
        start += width
