"""The decoder layers of `decode.FastDecoder` as one TorchScript module (a decoding step's
`forward`, and `prefill` for whole prompts).

A batch-1 decoding step of SmolLM2-135M is about 750 small tensor operations between the
matrix products; called from Python each costs 2-4 us of interpreter and argument handling
on top of its work, about a quarter of the step on this project's 2-core CPUs. TorchScript
runs the same operations from its C++ interpreter. torch.compile would go further (it fuses
the elementwise operations) but compiles for minutes here, again for each batch shape, and
cannot trace the packed float16 linears; TorchScript compiles in about a second, takes any
shape and calls the packed linears as they are.

LoRA rows are computed as PEFT's mixed-batch forward does: each adapter's rows get
`scaling * B(A(x))` added to the base projection's output. The adapters' factors come in as
`Tables`: for each adapter in the batch, its row indices and, per layer, (part, first
column, A, B, scaling) for each projection it adapts, `part` naming the fused product
(QKV, O, GATE_UP or DOWN) and the first column where that projection's outputs start in it.
"""

from typing import Optional

import torch
import torch.nn.functional as F  # noqa: N812

# the fused products a LoRA factor adds to (TorchScript reads no global: forward spells them)
QKV, O, GATE_UP, DOWN = 0, 1, 2, 3  # noqa: E741 (the o projection's name)

# one adapter's LoRA factors: per layer, [(part, first column, A, B, scaling)]
Factors = list[list[tuple[int, int, torch.Tensor, torch.Tensor, float]]]
# (its rows, its factors) for each adapter in the batch
Tables = list[tuple[torch.Tensor, Factors]]


class Fp16Linear(torch.nn.Module):
    """`x @ weight.T + bias` through FBGEMM's float16-weight GEMM (float32 activations)."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
        super().__init__()
        self.packed = torch.ops.quantized.linear_prepack_fp16(weight, bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.quantized.linear_dynamic_fp16(x, self.packed)

    def eager(self, x: torch.Tensor) -> torch.Tensor:
        """`forward` for Python callers (TorchScript compiles `forward` only): the overload
        itself, as calling the packet checks its arguments in Python every time, which cost
        about 1.5 ms of a 25 ms decoding step through transformers' modules."""
        return torch.ops.quantized.linear_dynamic_fp16.default(x, self.packed)


class WideFp16Linear(torch.nn.Module):
    """`Fp16Linear` for a product with many output columns (an LM head), as blocks of
    `COLUMNS` columns whose outputs are concatenated.

    FBGEMM's kernel passes over the float32 output once per block of the input's columns; for
    SmolLM2-135M's head (49152 x 576) at 16 rows that output is 3 MiB, past this CPU's 1 MiB
    L2 cache, and one product took 9.1 ms. In blocks of 8192 columns (512 KiB at 16 rows) it
    takes 7.4 ms; at one row it costs 0.2 ms more (2.6 ms), for the extra calls.
    """

    COLUMNS = 8192

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
        super().__init__()
        self.parts = torch.nn.ModuleList(
            Fp16Linear(weight[start:start + self.COLUMNS].contiguous(),
                       None if bias is None else bias[start:start + self.COLUMNS].contiguous())
            for start in range(0, weight.shape[0], self.COLUMNS))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outputs: list[torch.Tensor] = []
        for part in self.parts:
            outputs.append(part(x))
        return torch.cat(outputs, dim=-1)

    def eager(self, x: torch.Tensor) -> torch.Tensor:
        """`forward` for Python callers (as Fp16Linear has one)."""
        return torch.cat([part.eager(x) for part in self.parts], dim=-1)


class Bf16Linear(torch.nn.Module):
    """`x @ weight.T + bias` with bf16 weights and inputs, float32 out: oneDNN's AMX (or
    AVX512-BF16) kernels, on CPUs that have them."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
        super().__init__()
        self.weight = weight.to(torch.bfloat16)
        self.bias = None if bias is None else bias.to(torch.bfloat16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x.to(torch.bfloat16), self.weight, self.bias).to(torch.float32)

    def eager(self, x: torch.Tensor) -> torch.Tensor:
        """`forward` for Python callers (as Fp16Linear has one)."""
        return self.forward(x)


class ByRowsLinear(torch.nn.Module):
    """One product, two kernels: fewer than `ROWS` rows (decoding a few sequences) through
    `few`, more (prompts, bigger batches) through `many`.

    On a CPU with AMX, FBGEMM's float16-weight kernel is the faster one for a few rows
    (reading the weights is the work; at one row, 13 vs 18 ms for SmolLM2-135M's layers
    here) and bf16 the faster from about six (20 vs 32 ms at 16 rows).
    """

    ROWS = 6

    def __init__(self, few: torch.nn.Module, many: torch.nn.Module) -> None:
        super().__init__()
        self.few, self.many = few, many
        self.rows = self.ROWS  # TorchScript reads instance attributes only

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.numel() >= self.rows * x.shape[-1]:
            return self.many(x)
        return self.few(x)

    def eager(self, x: torch.Tensor) -> torch.Tensor:
        """`forward` for Python callers (as Fp16Linear has one)."""
        if x.numel() >= self.rows * x.shape[-1]:
            return self.many.eager(x)
        return self.few.eager(x)


class OneDnnLinear(torch.nn.Module):
    """`x @ weight.T + bias` over a float32 weight repacked for oneDNN."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
        super().__init__()
        # the batch-size hint picks the blocking: 16 is fast from 1 to 16 rows, and unlike
        # a hint of 1 it gives a row the same result at any batch size
        self.packed = torch.ops.mkldnn._reorder_linear_weight(weight, 16)
        self.bias = bias

    # TorchScript cannot spell this operator's `Scalar?[] scalars` argument, so the scripted
    # layers call this forward back in Python (the float32 path is not the default one)
    @torch.jit.ignore
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.mkldnn._linear_pointwise.default(x, self.packed, self.bias, "none",
                                                          [], "")

    def eager(self, x: torch.Tensor) -> torch.Tensor:
        """`forward` for Python callers (as Fp16Linear has one)."""
        return self.forward(x)


class PlainLinear(torch.nn.Module):
    """`x @ weight.T + bias` with torch's own linear."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
        super().__init__()
        self.weight, self.bias = weight, bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight, self.bias)


class Layer(torch.nn.Module):
    """One decoder layer's weights (fused q/k/v and gate/up products, o, down, two norms)
    and the parts of its forward that do not depend on how many tokens a row has."""

    def __init__(self, qkv: torch.nn.Module, o: torch.nn.Module, gate_up: torch.nn.Module,
                 down: torch.nn.Module, norm_in: torch.Tensor, norm_post: torch.Tensor) -> None:
        super().__init__()
        self.qkv, self.o, self.gate_up, self.down = qkv, o, gate_up, down
        self.norm_in, self.norm_post = norm_in, norm_post

    def project(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, tables: Tables,
                index: int, eps: float, heads: int, kv: int
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """(q and k rotated [tokens, heads + kv, dim], v [tokens, kv * dim]) of `x` [tokens,
        hidden]; cos, sin: [tokens, 1, dim], sin with its first half negated."""
        h = _rms_norm(x, self.norm_in, eps)
        qkv = self.qkv(h)
        _add_lora(qkv, h, tables, index, 0)  # QKV
        dim = cos.shape[-1]
        qk = qkv[:, :(heads + kv) * dim].view(x.shape[0], heads + kv, dim)
        # rotate_half(t) * sin == roll(t, half) * (sin with its first half negated)
        qk = torch.addcmul(qk * cos, qk.roll(dim // 2, dims=-1), sin)
        return qk, qkv[:, (heads + kv) * dim:]

    def finish(self, x: torch.Tensor, a: torch.Tensor, tables: Tables, index: int, eps: float,
               intermediate: int) -> torch.Tensor:
        """The layer's output from its input `x` and the attention's `a` [tokens, hidden]:
        o, residual, the SiLU-gated MLP, residual."""
        o = self.o(a)
        _add_lora(o, a, tables, index, 1)  # O
        x = x + o
        h = _rms_norm(x, self.norm_post, eps)
        gu = self.gate_up(h)
        _add_lora(gu, h, tables, index, 2)  # GATE_UP
        m = F.silu(gu[:, :intermediate]) * gu[:, intermediate:]
        d = self.down(m)
        _add_lora(d, m, tables, index, 3)  # DOWN
        return x + d


class Layers(torch.nn.Module):
    """The decoder layers of a decoding step (`forward`: one token per row) and of a prefill
    (`prefill`: a row's prompt tokens at once)."""

    def __init__(self, layers: list[Layer], eps: float, heads: int, kv_heads: int,
                 head_dim: int, intermediate: int, scale: float) -> None:
        super().__init__()
        self.layers = torch.nn.ModuleList(layers)
        self.eps, self.scale = eps, scale
        self.heads, self.kv_heads, self.head_dim = heads, kv_heads, head_dim
        self.intermediate = intermediate

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                attend: torch.Tensor, keys: list[torch.Tensor], values: list[torch.Tensor],
                column: int, tables: Tables) -> torch.Tensor:
        """The hidden states [rows, hidden] after the layers, from the embedded tokens `x`.

        cos, sin: [rows, 1, head_dim] the rotary embedding at each row's position, sin with
        its first half negated; attend: [rows, 1, 1, column + 1] additive attention mask;
        keys, values: each layer's cache buffers [rows, kv_heads, room, head_dim], whose
        column `column` this step writes (the columns before it are the cache).
        """
        rows = x.shape[0]
        heads, kv, dim = self.heads, self.kv_heads, self.head_dim
        for index, layer in enumerate(self.layers):
            qk, v = layer.project(x, cos, sin, tables, index, self.eps, heads, kv)
            # the query heads sharing a key/value head are that head's query rows, so
            # attention reads each key once (query head h uses key head h // group)
            q = qk[:, :heads].view(rows, kv, heads // kv, dim)
            keys[index].select(2, column).copy_(qk[:, heads:])
            values[index].select(2, column).copy_(v.view(rows, kv, dim))
            a = F.scaled_dot_product_attention(
                q, keys[index][:, :, :column + 1], values[index][:, :, :column + 1],
                attn_mask=attend, scale=self.scale).view(rows, heads * dim)
            x = layer.finish(x, a, tables, index, self.eps, self.intermediate)
        return x

    @torch.jit.export
    def prefill(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                attend: Optional[torch.Tensor], keys: list[torch.Tensor],  # noqa: UP045
                values: list[torch.Tensor], tokens: int, tables: Tables) -> torch.Tensor:
        """The hidden states [rows * tokens, hidden] after the layers, from the embedded
        prompts `x` [rows * tokens, hidden] (each row's `tokens` tokens in turn).

        cos, sin: [rows * tokens, 1, head_dim] as in `forward`; attend: [rows, 1, tokens,
        tokens] additive mask (causal, and padding), or None for causal attention with no
        padding (SDPA then skips the masked half); keys, values: each layer's cache
        buffers [rows, kv_heads, room, head_dim], whose first `tokens` columns this writes.
        LoRA rows in `tables` count tokens (row r's tokens are r * tokens + t).
        """
        rows = x.shape[0] // tokens
        heads, kv, dim = self.heads, self.kv_heads, self.head_dim
        for index, layer in enumerate(self.layers):
            qk, v = layer.project(x, cos, sin, tables, index, self.eps, heads, kv)
            qk = qk.view(rows, tokens, heads + kv, dim).transpose(1, 2)
            k = keys[index][:, :, :tokens]
            k.copy_(qk[:, heads:])
            v = values[index][:, :, :tokens].copy_(v.view(rows, tokens, kv, dim).transpose(1, 2))
            a = F.scaled_dot_product_attention(
                qk[:, :heads], k, v, attn_mask=attend, is_causal=attend is None,
                scale=self.scale, enable_gqa=True)
            x = layer.finish(x, a.transpose(1, 2).reshape(rows * tokens, heads * dim), tables,
                             index, self.eps, self.intermediate)
        return x


def _add_lora(out: torch.Tensor, x: torch.Tensor, tables: Tables, layer: int,
              part: int) -> None:
    """Add each adapter's `scaling * B(A(x))` for its rows to the columns of `out` that its
    projections in `part` produce."""
    for rows, per_layer in tables:
        for which, start, a, b, scaling in per_layer[layer]:
            if which == part:
                delta = F.linear(F.linear(x.index_select(0, rows), a), b) * scaling
                out.narrow(1, start, b.shape[0]).index_add_(0, rows, delta)


def _rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """Llama's RMSNorm as transformers writes it (float32 input): four operations, where
    F.rms_norm dispatches through a fused operator that decomposes into more on a CPU
    (28 us a call for one decoding row here, 60 calls a step)."""
    return weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))
