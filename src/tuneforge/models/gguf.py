"""GGUF -> a plain float32 safetensors directory, checked to answer like the GGUF itself.

transformers loads a GGUF dequantised (`from_pretrained(dir, gguf_file=...)`) but refuses to
`save_pretrained` that object, so the weights are copied into a fresh model built from the
same config and saved from there. The saved directory is loaded back and must generate,
greedily, the same token ids as the GGUF-loaded model on a few chat prompts; a difference is
a bug in this conversion (InternalError), never silently kept.
"""

from __future__ import annotations

import copy
import hashlib
import logging
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from tuneforge import __version__
from tuneforge.errors import InternalError
from tuneforge.paths import atomic_dir, atomic_write, commit_dir

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

logger = logging.getLogger(__name__)

RECORD_FILE = "tuneforge_model.json"
CHECK_PROMPTS = (
    "What is the capital of France?",
    "Write one sentence about the sea.",
    "Name three colours.",
)
CHECK_NEW_TOKENS = 16


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class GgufSource(_Record):
    """The GGUF a prepared directory was made from."""

    file: str = Field(description="The GGUF file (absolute path at preparation time).")
    package: str | None = Field(default=None, description="The Python package shipping it.")
    sha1: str = Field(description="sha1 of the GGUF file's bytes.")


class GreedyCheck(_Record):
    """The prepared model generated, greedily, what the GGUF-loaded model generated."""

    prompts: int = Field(description="How many chat prompts were compared.")
    new_tokens: int = Field(description="Tokens generated per prompt (at most).")
    identical: bool = Field(description="Every prompt gave identical token ids.")


class PreparedRecord(_Record):
    """tuneforge_model.json: written last into a prepared directory, so it marks one complete."""

    name: str = Field(description="The alias, or gguf-<sha1> for a GGUF path.")
    kind: Literal["causal-lm"] = Field(default="causal-lm", description="What the model does.")
    source: GgufSource = Field(description="Where the weights came from.")
    dtype: str = Field(description="The dtype the weights were saved in.")
    check: GreedyCheck = Field(description="The greedy-equality check of the saved weights.")
    tuneforge_version: str = Field(description="The tuneforge that prepared it.")


def read_record(directory: Path) -> PreparedRecord | None:
    """The record of a prepared directory, or None when it has none (not prepared by us)."""
    path = directory / RECORD_FILE
    if not path.is_file():
        return None
    return PreparedRecord.model_validate_json(path.read_text(encoding="utf-8"))


def convert_gguf(
    gguf: Path,
    tokenizer: PreTrainedTokenizerBase,
    target: Path,
    *,
    name: str,
    package: str | None = None,
    trust_remote_code: bool = False,
) -> PreparedRecord:
    """Dequantise `gguf` into a float32 safetensors directory at `target`, with `tokenizer`.

    The directory appears complete or not at all (built under a temporary name, renamed).

    Raises:
        InternalError: the saved model does not generate what the GGUF-loaded model does.
    """
    import torch
    from transformers import AutoModelForCausalLM

    logger.info("dequantising %s into %s (once; about a minute for 135M parameters)", gguf, target)
    loaded = AutoModelForCausalLM.from_pretrained(
        str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32,
        trust_remote_code=trust_remote_code,
    )
    config = copy.deepcopy(loaded.config)
    # The GGUF's quantization_config would make transformers treat the saved float32 weights
    # as GGUF-quantised again (is_quantized, not trainable, not savable).
    del config.quantization_config
    fresh = AutoModelForCausalLM.from_config(
        config, dtype=torch.float32, trust_remote_code=trust_remote_code
    )
    fresh.load_state_dict(loaded.state_dict(), strict=True)
    fresh.generation_config = loaded.generation_config
    tmp = atomic_dir(target)
    try:
        fresh.save_pretrained(str(tmp))
        tokenizer.save_pretrained(str(tmp))
        saved = AutoModelForCausalLM.from_pretrained(
            str(tmp), dtype=torch.float32, trust_remote_code=trust_remote_code
        )
        if getattr(saved, "hf_quantizer", None) is not None:
            raise InternalError(f"{tmp}: expected plain float32 weights, got a quantised model")
        check = greedy_check(loaded, saved, tokenizer)
        if not check.identical:
            raise InternalError(
                f"{gguf}: the prepared model does not generate what the GGUF does: expected "
                f"identical greedy token ids on {check.prompts} prompts, got a difference"
            )
        record = PreparedRecord(
            name=name,
            source=GgufSource(file=str(gguf.resolve()), package=package, sha1=_sha1(gguf)),
            dtype="float32",
            check=check,
            tuneforge_version=__version__,
        )
        atomic_write(tmp / RECORD_FILE, record.model_dump_json(indent=2) + "\n")
        commit_dir(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return record


def greedy_check(
    reference: PreTrainedModel, candidate: PreTrainedModel, tokenizer: PreTrainedTokenizerBase
) -> GreedyCheck:
    """Generate greedily on CHECK_PROMPTS (chat-rendered) with both models and compare ids."""
    prompts = [_prompt_ids(tokenizer, text) for text in CHECK_PROMPTS]
    expected = _greedy_ids(reference, prompts, tokenizer)
    got = _greedy_ids(candidate, prompts, tokenizer)
    return GreedyCheck(prompts=len(prompts), new_tokens=CHECK_NEW_TOKENS, identical=expected == got)


def greedy_token_ids(model: Any, tokenizer: PreTrainedTokenizerBase) -> list[list[int]]:
    """The token ids `model` generates greedily on CHECK_PROMPTS (chat-rendered), per prompt."""
    return _greedy_ids(model, [_prompt_ids(tokenizer, text) for text in CHECK_PROMPTS], tokenizer)


def _prompt_ids(tokenizer: PreTrainedTokenizerBase, text: str) -> list[int]:
    messages = [{"role": "user", "content": text}]
    if tokenizer.chat_template:
        text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def _greedy_ids(
    model: Any, prompts: list[list[int]], tokenizer: PreTrainedTokenizerBase
) -> list[list[int]]:
    import torch
    from transformers import GenerationConfig

    eos = tokenizer.eos_token_id
    config = GenerationConfig(
        max_new_tokens=CHECK_NEW_TOKENS, do_sample=False, eos_token_id=eos,
        pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos,
    )
    model.eval()
    out = []
    with torch.no_grad():
        for ids in prompts:
            input_ids = torch.tensor([ids])
            generated = model.generate(
                input_ids, attention_mask=torch.ones_like(input_ids), generation_config=config
            )
            out.append(generated[0, len(ids):].tolist())
    return out


def _sha1(path: Path) -> str:
    h = hashlib.sha1()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()
