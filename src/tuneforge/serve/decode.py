"""A lean decoding step for Llama-family models (Llama, Mistral, Qwen2, SmolLM).

A decoding step feeds one token per row. Through transformers' modules it costs about 60
small tensor operations and a dozen Python module calls per layer, on top of the matrix
products; on this project's 2-core CPUs that overhead was a third of a batch-1 step of
SmolLM2-135M. `FastDecoder.step` computes the same layer with about 25 operations: q, k and
v in one matrix product, gate and up in another, the rotary embedding of q and k at once,
the fused RMSNorm kernel, and attention through SDPA on the engine's cache buffers, the
query heads that share a key/value head passed as that head's query rows (so no key is
repeated). vLLM and llama.cpp do the same fusions; transformers does not expose them. The
layer loop runs as one TorchScript module (`serve/layers.py`), out of Python's interpreter.

`FastDecoder.prefill` runs a batch of (left-padded) prompts through the same fused layers,
all of a row's tokens at once, and writes their keys and values into the engine's cache:
there the matrix products dominate, and the fused q/k/v and gate/up products and the fewer
operations took 16 prompts of 39 tokens from about 1.25 to about 1.1 s here, and one short
prompt from about 95 to 70 ms. LoRA rows work as PEFT's mixed-batch forward does: each
adapter's rows get `scaling * B(A(x))` added to the base projection's output.
`FastDecoder.build` returns None for a model this step does not reproduce (another
architecture, biases in the MLP, a sliding window), and `supports` is False for an adapter
with LoRA outside the projections; those prefill and decode through transformers. The
engine also checks the prefill and the step against transformers' forward at start-up and
falls back if they disagree.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from tuneforge.serve.prompts import BASE

if TYPE_CHECKING:
    import torch

    from tuneforge.serve.layers import Factors, Tables

logger = logging.getLogger(__name__)

# architectures whose decoder layer is exactly: RMSNorm -> attention (q, k, v, o; rotary) ->
# residual -> RMSNorm -> SiLU-gated MLP -> residual, with optional q/k/v biases
SUPPORTED = {"llama", "mistral", "qwen2"}



class FastDecoder:
    """One decoding step of a Llama-family causal LM, reading and writing the engine's cache.

    `linear(weight, bias)` turns a float32 weight into a module `x -> x @ weight.T + bias`
    (the engine's packed float16 or oneDNN linear), so the fused weights are multiplied the
    same way as the engine's own linears. The layers run as one TorchScript module
    (`serve/layers.py`).
    """

    def __init__(self, model: Any, layers: Any, modules: list[dict[str, Any]]) -> None:
        self._model = model  # the transformers model (the base: PEFT wraps its modules)
        self._layers = layers  # the scripted serve.layers.Layers
        self._modules = modules  # per layer, q_proj, k_proj, ... as transformers holds them
        inner = model.model
        self._embed, self._norm, self._rotary = inner.embed_tokens, inner.norm, inner.rotary_emb
        # adapter name -> its LoRA factors per layer (serve.layers.Tables), or None where
        # this step does not apply it
        self._tables: dict[str, Factors | None] = {}

    @classmethod
    def build(cls, model: Any, linear: Any) -> FastDecoder | None:
        """A decoder for `model` (a transformers CausalLM, not yet wrapped by PEFT), or None
        where this step would not reproduce its forward."""
        import torch

        from tuneforge.serve import layers as scripted

        config = model.config
        if getattr(config, "model_type", None) not in SUPPORTED \
                or getattr(config, "hidden_act", None) != "silu" \
                or getattr(config, "mlp_bias", False) \
                or getattr(config, "pretraining_tp", 1) != 1 \
                or getattr(config, "sliding_window", None) and \
                getattr(config, "use_sliding_window", True) \
                or not hasattr(model, "model") or not hasattr(model.model, "rotary_emb"):
            return None

        def packed(projection: torch.nn.Linear) -> Any:
            # the engine's packed module (the projection's forward is its `eager` method)
            module = getattr(projection.forward, "__self__", None)
            return module if isinstance(
                module, (scripted.Fp16Linear, scripted.WideFp16Linear, scripted.OneDnnLinear)) \
                else linear(projection.weight.detach(), projection.bias)

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
            layers.append(scripted.Layer(
                qkv=linear(torch.cat([p.weight.detach() for p in projections]), bias),
                o=packed(attn.o_proj),
                gate_up=linear(torch.cat([mlp.gate_proj.weight.detach(),
                                          mlp.up_proj.weight.detach()]), None),
                down=packed(mlp.down_proj),
                norm_in=layer.input_layernorm.weight.detach(),
                norm_post=layer.post_attention_layernorm.weight.detach()))
        first = model.model.layers[0].self_attn
        head_dim = int(first.head_dim)
        module = scripted.Layers(
            layers, float(model.model.norm.variance_epsilon), int(config.num_attention_heads),
            int(config.num_key_value_heads), head_dim, int(config.intermediate_size),
            float(getattr(first, "scaling", head_dim ** -0.5)))
        return cls(model, torch.jit.script(module),
                   [_projections(layer) for layer in model.model.layers])

    def rebind(self, model: Any) -> None:
        """Look the projections up again in `model` (after PEFT wrapped or unwrapped them)."""
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        self._modules = [_projections(layer) for layer in base.model.layers]
        self._tables.clear()

    def supports(self, adapters: list[str]) -> bool:
        """Whether every named adapter is a plain LoRA this step applies: no DoRA, and LoRA
        only on the projections (an adapter that also changes the embedding, the norms or
        the head goes through transformers' forward)."""
        for name in set(adapters) - {BASE}:
            if name not in self._tables:
                self._tables[name] = self._lora_factors(name)
            if self._tables[name] is None:
                return False
        return True

    def _lora_factors(self, name: str) -> Factors | None:
        """Adapter `name`'s (part, first column, A, B, scaling) per layer, or None where it
        is not a plain LoRA on the projections."""
        import torch

        from tuneforge.serve.layers import DOWN, GATE_UP, QKV, O

        known = {id(m) for layer in self._modules for m in layer.values()}
        if any(name in getattr(m, "lora_A", {}) or name in getattr(m, "modules_to_save", {})
               or name in getattr(m, "lora_embedding_A", {})
               for m in self._model.modules() if id(m) not in known):
            return None
        tables = []
        for modules in self._modules:
            factors = []
            for part, names in ((QKV, ("q_proj", "k_proj", "v_proj")), (O, ("o_proj",)),
                                (GATE_UP, ("gate_proj", "up_proj")), (DOWN, ("down_proj",))):
                start = 0
                for projection in names:
                    module = modules[projection]
                    if name in getattr(module, "lora_A", {}):
                        a, b = module.lora_A[name], module.lora_B[name]
                        if module.use_dora.get(name, False) or type(a) is not \
                                torch.nn.Linear or type(b) is not torch.nn.Linear \
                                or a.bias is not None or b.bias is not None:
                            return None
                        factors.append((part, start, a.weight.detach(), b.weight.detach(),
                                        float(module.scaling[name])))
                    start += module.out_features
            tables.append(factors)
        return tables

    def step(self, tokens: torch.Tensor, positions: torch.Tensor, mask: torch.Tensor,
             cache: Any, adapters: list[str]) -> torch.Tensor:
        """Logits [rows, vocab] of the next token after `tokens` [rows].

        positions: [rows] each token's position; mask: [rows, columns] bool, True where a row
        attends (the cache's columns plus this step's); cache: the engine's cache of
        `GrowingLayer`s, which this step extends by one column.
        """
        import torch

        with torch.inference_mode():
            x = self._embed(tokens)  # [rows, hidden]
            cos, sin = self._rotation(x, positions)
            # one additive mask for all layers (a bool mask is converted in every call)
            attend = _additive(mask)[:, None, None, :]
            column = cache.layers[0].length
            for layer in cache.layers:
                layer.reserve(1)
            x = self._layers(x, cos, sin, attend, [layer.key_buffer for layer in cache.layers],
                             [layer.value_buffer for layer in cache.layers], column,
                             self._batch_tables(adapters, 1))
            for layer in cache.layers:
                layer.advance(1)
            return self._model.lm_head(self._norm(x))

    def prefill(self, ids: torch.Tensor, mask: torch.Tensor | None, cache: Any,
                adapters: list[str]) -> torch.Tensor:
        """Logits [rows, vocab] of the token after each row's prompt, writing the prompts'
        keys and values into `cache` (an empty cache of `GrowingLayer`s).

        ids: [rows, tokens] the prompts, left-padded; mask: [rows, tokens] 1 where a row has
        a token (None: no padding). Like transformers' forward with `position_ids` counting
        each row's own tokens.
        """
        import torch

        rows, tokens = ids.shape
        with torch.inference_mode():
            positions = torch.arange(tokens).expand(rows, tokens) if mask is None \
                else padded_positions(mask)
            x = self._embed(ids).view(rows * tokens, -1)
            cos, sin = self._rotation(x, positions.reshape(-1))
            attend = None  # no padding: causal attention, no mask
            if mask is not None:
                # a padding token attends to itself only: a row of the mask that is all
                # -inf would make its attention NaN, and the NaN would reach the cache
                allowed = torch.ones(tokens, tokens, dtype=torch.bool).tril()[None] \
                    & mask.bool()[:, None, :] | torch.eye(tokens, dtype=torch.bool)
                attend = _additive(allowed)[:, None]
            kv, dim = self._layers.kv_heads, self._layers.head_dim
            empty = x.new_zeros(rows, kv, 0, dim)
            while len(cache.layers) < len(self._modules):
                cache.layers.append(cache.layer_class_to_replicate())
            for layer in cache.layers:
                layer.lazy_initialization(empty, empty)
                layer.reserve(tokens)
            x = self._layers.prefill(
                x, cos, sin, attend, [layer.key_buffer for layer in cache.layers],
                [layer.value_buffer for layer in cache.layers], tokens,
                self._batch_tables(adapters, tokens))
            for layer in cache.layers:
                layer.advance(tokens)
            return self._model.lm_head(self._norm(x.view(rows, tokens, -1)[:, -1]))

    def _rotation(self, x: torch.Tensor, positions: torch.Tensor
                  ) -> tuple[torch.Tensor, torch.Tensor]:
        """The rotary embedding's cos and sin [tokens, 1, head_dim] at `positions` [tokens],
        sin with its first half negated (as `serve.layers` applies them)."""
        import torch

        cos, sin = self._rotary(x, positions[:, None])
        half = sin.shape[-1] // 2
        return cos, torch.cat((-sin[..., :half], sin[..., half:]), dim=-1)

    def _batch_tables(self, adapters: list[str], tokens: int) -> Tables:
        """The `serve.layers.Tables` of a batch whose row i uses `adapters[i]` and has
        `tokens` tokens (row i's are the rows i * tokens ... of the layers' input)."""
        import torch

        rows: dict[str, list[int]] = {}
        for row, name in enumerate(adapters):
            if name != BASE:
                rows.setdefault(name, []).append(row)
        tables = []
        for name, index in rows.items():
            spread = torch.tensor(index)
            if tokens > 1:
                spread = (spread[:, None] * tokens + torch.arange(tokens)).reshape(-1)
            tables.append((spread, self._tables[name]))
        return tables


def padded_positions(mask: torch.Tensor) -> torch.Tensor:
    """Each token's position within its own row of a left-padded batch (padding at 0), from
    the batch's mask [rows, tokens] (1 where a row has a token)."""
    return (mask.cumsum(-1) - 1).clamp(min=0)


def _additive(allowed: torch.Tensor) -> torch.Tensor:
    """A float mask from a bool one: 0 where True, -inf where False."""
    import torch

    return torch.zeros(allowed.shape).masked_fill_(~allowed, float("-inf"))


def _projections(layer: Any) -> dict[str, Any]:
    """A decoder layer's seven projections by name, as transformers (or PEFT) holds them."""
    attn, mlp = layer.self_attn, layer.mlp
    return {name: getattr(attn if name in ("q_proj", "k_proj", "v_proj", "o_proj") else mlp, name)
            for name in ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                         "down_proj")}
