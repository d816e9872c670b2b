"""The fast causal-LM loss equals transformers' own, padded or padding-free."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, TrainingArguments

from tuneforge.train.collate import IGNORE_INDEX, PaddingCollator
from tuneforge.train.trainer import CausalLMTrainer

ROWS = [  # prompt tokens masked, the response learned; three lengths
    {"input_ids": [5, 6, 7, 8, 9, 10], "labels": [-100, -100, -100, 8, 9, 10]},
    {"input_ids": [11, 12, 13], "labels": [-100, 12, 13]},
    {"input_ids": [14, 15, 16, 17, 18, 19, 20, 21], "labels": [-100, -100, 16, 17, 18, 19, 20, 21]},
]


@pytest.fixture(scope="module")
def trainer(tiny_llm_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> CausalLMTrainer:
    model = AutoModelForCausalLM.from_pretrained(str(tiny_llm_dir), dtype=torch.float32)
    args = TrainingArguments(output_dir=str(tmp_path_factory.mktemp("out")), use_cpu=True,
                             report_to="none")
    return CausalLMTrainer(model=model, args=args)


def stock_loss(model: torch.nn.Module, rows: list[dict]) -> torch.Tensor:
    """transformers' ForCausalLMLoss over the padded batch."""
    batch = PaddingCollator(0, padding_free=False)(rows)
    return model(**batch, use_cache=False).loss


def test_padding_free_batch_is_one_row_with_restarting_positions() -> None:
    batch = PaddingCollator(0)(ROWS)
    assert batch["input_ids"].shape == (1, 17)
    assert batch["position_ids"][0].tolist() == [*range(6), *range(3), *range(8)]
    starts = [0, 6, 9]  # each sample's first token is never a target
    assert all(batch["labels"][0, i] == IGNORE_INDEX for i in starts)


@pytest.mark.parametrize("padding_free", [True, False])
def test_loss_equals_transformers_loss(trainer: CausalLMTrainer, padding_free: bool) -> None:
    expected = stock_loss(trainer.model, ROWS)
    batch = PaddingCollator(0, padding_free=padding_free)(ROWS)
    got = trainer.compute_loss(trainer.model, batch)
    assert torch.allclose(got, expected, atol=1e-5), (got, expected)


def test_gradients_equal_transformers_gradients(trainer: CausalLMTrainer) -> None:
    model = trainer.model
    model.zero_grad()
    stock_loss(model, ROWS).backward()
    expected = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    trainer.compute_loss(model, PaddingCollator(0)(ROWS)).backward()
    for want, param in zip(expected, model.parameters(), strict=True):
        assert torch.allclose(param.grad, want, atol=1e-6)


def test_packed_attention_equals_attention_per_sample(tiny_llm_dir: Path) -> None:
    from tuneforge.train.attention import PACKED_ATTENTION

    model = AutoModelForCausalLM.from_pretrained(str(tiny_llm_dir), dtype=torch.float32)
    separate = [model(torch.tensor([row["input_ids"]]), use_cache=False).logits[0]
                for row in ROWS]
    model.set_attn_implementation(PACKED_ATTENTION)
    batch = PaddingCollator(0)(ROWS)
    packed = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"],
                   use_cache=False).logits[0]
    assert torch.allclose(packed, torch.cat(separate), atol=1e-5)
    with pytest.raises(ValueError, match="one packed row"):
        model(**PaddingCollator(0, padding_free=False)(ROWS), use_cache=False)


def test_packed_attention_under_cpu_autocast_takes_float32_for_short_samples(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import torch.nn.functional as F

    from tuneforge.train import attention

    monkeypatch.setattr(attention, "FP32_BELOW", {"amx": 8, "other": 8})
    torch.manual_seed(0)
    q, k, v = torch.randn(1, 4, 14, 8), torch.randn(1, 2, 14, 8), torch.randn(1, 2, 14, 8)
    positions = torch.tensor([[*range(5), *range(9)]])  # a 5-token sample, then a 9-token one
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, _ = attention.packed_sdpa(None, q, k, v, None, position_ids=positions)
        long = F.scaled_dot_product_attention(q[:, :, 5:], k[:, :, 5:], v[:, :, 5:],
                                              is_causal=True, enable_gqa=True)
    short = F.scaled_dot_product_attention(q[:, :, :5], k[:, :, :5], v[:, :, :5],
                                           is_causal=True, enable_gqa=True)
    assert out.dtype == long.dtype == torch.bfloat16
    assert torch.equal(out[:, :5], short.to(torch.bfloat16).transpose(1, 2))  # float32 math
    assert torch.equal(out[:, 5:], long.transpose(1, 2))  # the autocast (bf16) kernel


def test_the_float32_attention_length_follows_the_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    from tuneforge.train import attention

    for amx, below in ((True, 320), (False, 512)):
        monkeypatch.setattr(attention, "cpu_has_amx", lambda amx=amx: amx)
        assert attention.fp32_below() == below


def test_llama_heads_take_the_chunked_loss_and_get_their_forward_back(
        trainer: CausalLMTrainer) -> None:
    from tuneforge.train import trainer as trainer_module

    head = trainer_module.plain_output_head(trainer.model)
    assert head is trainer.model.lm_head
    trainer.compute_loss(trainer.model, PaddingCollator(0)(ROWS))
    x = torch.ones(1, head.in_features)
    assert head(x).shape == (1, head.out_features)  # the real forward again


def test_chunks_sum_to_the_whole(monkeypatch: pytest.MonkeyPatch,
                                 trainer: CausalLMTrainer) -> None:
    from tuneforge.train import trainer as trainer_module

    batch = PaddingCollator(0)(ROWS)
    whole = trainer.compute_loss(trainer.model, batch)
    monkeypatch.setattr(trainer_module, "CHUNK", 2)  # several chunks on this small batch
    assert torch.allclose(trainer.compute_loss(trainer.model, batch), whole, atol=1e-6)


def test_fused_chunked_loss_gradients_equal_autograd(monkeypatch: pytest.MonkeyPatch) -> None:
    from tuneforge.train import trainer as trainer_module

    monkeypatch.setattr(trainer_module, "CHUNK", 3)  # several chunks, the last one short
    torch.manual_seed(0)
    head = torch.nn.Linear(8, 11, bias=True)
    hidden = torch.randn(10, 8, requires_grad=True)
    targets = torch.randint(0, 11, (10,))
    targets[[1, 7]] = -100  # ignored positions get no gradient
    ours = trainer_module.chunked_cross_entropy(hidden, targets, head) * 3.0
    ours.backward()
    got = (hidden.grad.clone(), head.weight.grad.clone(), head.bias.grad.clone())
    hidden.grad, head.weight.grad, head.bias.grad = None, None, None
    plain = torch.nn.functional.cross_entropy(head(hidden), targets, ignore_index=-100,
                                              reduction="sum") * 3.0
    plain.backward()
    assert torch.allclose(ours, plain, atol=1e-5)
    for mine, want in zip(got, (hidden.grad, head.weight.grad, head.bias.grad), strict=True):
        assert torch.allclose(mine, want, atol=1e-5)
    head.weight.requires_grad_(False)  # LoRA: a frozen head gets no gradient, nor is one made
    head.bias.requires_grad_(False)
    hidden.grad, before = None, head.weight.grad.clone()
    trainer_module.chunked_cross_entropy(hidden, targets, head).backward()
    assert torch.allclose(hidden.grad, got[0] / 3.0, atol=1e-5)
    assert torch.equal(head.weight.grad, before)  # nothing accumulated into a frozen head


def test_fused_chunked_loss_in_bf16_matches_autocast(monkeypatch: pytest.MonkeyPatch) -> None:
    """With mixed precision the chunked head multiplies in bf16, as autocast's head would."""
    from tuneforge.train import trainer as trainer_module

    monkeypatch.setattr(trainer_module, "CHUNK", 4)
    torch.manual_seed(0)
    head = torch.nn.Linear(16, 40, bias=False)
    hidden = torch.randn(10, 16, requires_grad=True)
    targets = torch.randint(0, 40, (10,))
    targets[3] = -100
    ours = trainer_module.chunked_cross_entropy(hidden, targets, head, torch.bfloat16)
    ours.backward()
    got = (hidden.grad.clone(), head.weight.grad.clone())
    hidden.grad, head.weight.grad = None, None
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = head(hidden)
    assert logits.dtype == torch.bfloat16
    plain = torch.nn.functional.cross_entropy(logits.float(), targets, ignore_index=-100,
                                              reduction="sum")
    plain.backward()
    assert torch.allclose(ours, plain, rtol=1e-5)
    fp32 = torch.nn.functional.cross_entropy(head(hidden), targets, ignore_index=-100,
                                             reduction="sum")
    assert not torch.allclose(ours, fp32, rtol=1e-6)  # the products were in bf16
    for mine, want in zip(got, (hidden.grad, head.weight.grad), strict=True):
        assert torch.allclose(mine, want, rtol=1e-2, atol=1e-3)


def test_fused_chunked_loss_is_exact_for_logits_far_below_the_largest(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Logits spread over hundreds of nats (exp of them underflows): loss and gradients as
    autograd's cross-entropy gives them."""
    from tuneforge.train import trainer as trainer_module

    monkeypatch.setattr(trainer_module, "CHUNK", 4)
    torch.manual_seed(0)
    head = torch.nn.Linear(16, 40, bias=False)
    with torch.no_grad():
        head.weight.mul_(300.0)
    hidden = torch.randn(10, 16, requires_grad=True)
    targets = torch.randint(0, 40, (10,))
    targets[2] = -100
    ours = trainer_module.chunked_cross_entropy(hidden, targets, head)
    ours.backward()
    got = (hidden.grad.clone(), head.weight.grad.clone())
    hidden.grad, head.weight.grad = None, None
    logits = head(hidden)
    assert (logits.max(-1).values - logits.min(-1).values).min() > 200  # far below e^-87
    plain = torch.nn.functional.cross_entropy(logits, targets, ignore_index=-100,
                                              reduction="sum")
    plain.backward()
    assert torch.allclose(ours, plain, rtol=1e-5)
    for mine, want in zip(got, (hidden.grad, head.weight.grad), strict=True):
        assert torch.allclose(mine, want, rtol=1e-5, atol=1e-4)


def test_a_frozen_heads_low_precision_copy_is_kept_until_the_weight_changes() -> None:
    from tuneforge.train import trainer as trainer_module

    torch.manual_seed(0)
    head = torch.nn.Linear(16, 40, bias=False).requires_grad_(False)
    hidden = torch.randn(6, 16, requires_grad=True)
    targets = torch.randint(0, 40, (6,))

    def loss() -> torch.Tensor:
        return trainer_module.chunked_cross_entropy(hidden, targets, head, torch.bfloat16)

    first = loss()
    kept = head.weight._tuneforge_low_precision[1]
    assert kept.dtype == torch.bfloat16 and torch.equal(kept, head.weight.to(torch.bfloat16))
    assert torch.equal(loss(), first)
    assert head.weight._tuneforge_low_precision[1] is kept  # not cast again
    with torch.no_grad():
        head.weight.mul_(2.0)  # an in-place change (a loaded checkpoint, a merged adapter)
    changed = loss()
    assert head.weight._tuneforge_low_precision[1] is not kept
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = head(hidden)
    want = torch.nn.functional.cross_entropy(logits.float(), targets, reduction="sum")
    assert torch.allclose(changed, want, rtol=1e-5)
    kept = head.weight._tuneforge_low_precision[1]
    head.weight.data = head.weight.data * 0.5  # replaced, not changed in place
    loss()
    assert head.weight._tuneforge_low_precision[1] is not kept
    assert torch.equal(head.weight._tuneforge_low_precision[1],
                       head.weight.to(torch.bfloat16))
