"""`tuneforge export` on the tiny Llama: the merge, the GGUF round trip, the CLI's errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from tuneforge.cli.main import main
from tuneforge.config.export import build_export_config
from tuneforge.export.run import export_model
from tuneforge.models.gguf import greedy_token_ids
from tuneforge.settings import Settings

EXPORTED = {"config.json", "generation_config.json", "model.safetensors", "tokenizer.json",
            "tokenizer_config.json", "chat_template.jinja", "Modelfile", "tuneforge_export.json"}


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as info:
        main(argv)
    out, err = capsys.readouterr()
    return int(info.value.code), out, err


def load(directory: Path, **kwargs: Any) -> Any:
    import torch
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(directory), dtype=torch.float32, **kwargs)


@pytest.fixture(scope="module")
def adapter_dir(tiny_llm_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A LoRA adapter on tiny_llm_dir with random, nonzero A and B (so merging changes the
    weights), saved as training saves one: with the tokenizer and tuneforge_template.json."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoTokenizer

    torch.manual_seed(1)
    lora = LoraConfig(r=4, lora_alpha=8, init_lora_weights=False, task_type="CAUSAL_LM",
                      target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "up_proj"])
    model = get_peft_model(load(tiny_llm_dir), lora)
    path = tmp_path_factory.mktemp("adapter")
    model.save_pretrained(str(path))
    AutoTokenizer.from_pretrained(str(tiny_llm_dir)).save_pretrained(str(path))
    (path / "tuneforge_template.json").write_text('{"template": "tokenizer", "sha1": "-"}\n')
    return path


@pytest.fixture(scope="module")
def gguf_export(adapter_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The adapter exported merged, with --format gguf; the base comes from adapter_config."""
    home = tmp_path_factory.mktemp("home")
    out = tmp_path_factory.mktemp("exports") / "tiny-chat"
    config = build_export_config({"adapter": str(adapter_dir), "merge": True,
                                  "output_dir": str(out), "format": "gguf"})
    export_model(config, Settings(home=home))
    return out


@pytest.fixture(scope="module")
def merged_ids(gguf_export: Path) -> list[list[int]]:
    """What the exported safetensors model generates greedily on the check prompts."""
    return greedy_token_ids(load(gguf_export), _tokenizer(gguf_export))


def _tokenizer(directory: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(directory))


def test_merged_model_generates_like_base_plus_adapter(gguf_export, merged_ids, adapter_dir,
                                                       tiny_llm_dir) -> None:
    import torch
    from peft import PeftModel

    merged, base = load(gguf_export).state_dict(), load(tiny_llm_dir).state_dict()
    changed = {n.split(".")[-2] for n, w in base.items() if not torch.equal(w, merged[n])}
    assert changed == {"q_proj", "k_proj", "v_proj", "o_proj", "up_proj"}
    with_adapter = PeftModel.from_pretrained(load(tiny_llm_dir), str(adapter_dir))
    assert greedy_token_ids(with_adapter, _tokenizer(gguf_export)) == merged_ids
    record = json.loads((gguf_export / "tuneforge_export.json").read_text())
    assert record["merge_check"]["identical"] and record["adapter"] == str(adapter_dir)
    assert record["model"] == str(tiny_llm_dir.resolve())  # from adapter_config.json


def test_export_directory_holds_exactly_the_model_modelfile_and_gguf(gguf_export) -> None:
    assert {p.name for p in gguf_export.iterdir()} == EXPORTED | {"model.gguf"}
    assert not [p for p in gguf_export.parent.iterdir() if p.name.startswith(".")]
    modelfile = (gguf_export / "Modelfile").read_text()
    assert "FROM ./model.gguf\n" in modelfile and 'PARAMETER stop "<|im_end|>"' in modelfile
    assert 'SYSTEM """You are a tiny assistant."""' in modelfile


def test_gguf_generates_like_the_merged_model(gguf_export, merged_ids) -> None:
    from_gguf = load(gguf_export, gguf_file="model.gguf")
    assert greedy_token_ids(from_gguf, _tokenizer(gguf_export)) == merged_ids
    record = json.loads((gguf_export / "tuneforge_export.json").read_text())
    assert record["gguf_check"]["identical"] and record["outtype"] == "f32"


def test_gguf_carries_the_tokenizer_and_chat_template(gguf_export) -> None:
    from gguf import GGUFReader
    from transformers import AutoTokenizer

    exported = _tokenizer(gguf_export)
    from_gguf = AutoTokenizer.from_pretrained(str(gguf_export), gguf_file="model.gguf")
    for text in ("Hello there, how are you today? 42", "<|im_start|>user\n你好<|im_end|>\n"):
        assert from_gguf(text)["input_ids"] == exported(text)["input_ids"]
    fields = GGUFReader(str(gguf_export / "model.gguf")).fields
    assert fields["tokenizer.chat_template"].contents() == exported.chat_template
    assert fields["tokenizer.ggml.pre"].contents() == "gpt-2"
    assert fields["tokenizer.ggml.add_bos_token"].contents() is False


def test_f16_gguf_keeps_one_dimensional_tensors_in_f32(tiny_llm_dir, tmp_path) -> None:
    from gguf import GGMLQuantizationType, GGUFReader

    from tuneforge.export.gguf import write_gguf

    path = tmp_path / "model.gguf"
    write_gguf(tiny_llm_dir, _tokenizer(tiny_llm_dir), path, outtype="f16", name="tiny",
               add_bos=False)
    types = {t.name: t.tensor_type for t in GGUFReader(str(path)).tensors}
    assert types["blk.0.attn_q.weight"] == types["token_embd.weight"] == GGMLQuantizationType.F16
    assert types["blk.0.attn_norm.weight"] == GGMLQuantizationType.F32


def test_cli_exports_a_run_with_its_template_and_default_system(adapter_dir, tmp_path,
                                                                capsys) -> None:
    run_dir = tmp_path / "run"
    shutil.copytree(adapter_dir, run_dir / "output")
    (run_dir / "config.yaml").write_text("model:\n  default_system: Answer in French.\n")
    out = tmp_path / "exported"
    code, stdout, err = run(["export", "--adapter", str(run_dir), "--merge", "--template",
                             "chatml", "--output_dir", str(out)], capsys)
    assert (code, err) == (0, "")
    assert f"Modelfile: {out / 'Modelfile'}" in stdout and "ollama create exported" in stdout
    assert {p.name for p in out.iterdir()} == EXPORTED
    modelfile = (out / "Modelfile").read_text()
    assert 'SYSTEM """Answer in French."""' in modelfile
    assert 'PARAMETER stop "<|im_start|>"' in modelfile  # chatml's stop words
    chat = _tokenizer(out).apply_chat_template([{"role": "user", "content": "U"}], tokenize=False)
    assert chat == ("<|im_start|>system\nAnswer in French.<|im_end|>\n<|im_start|>user\nU"
                    "<|im_end|>\n<|im_start|>assistant\n")


def test_cli_export_with_an_explicit_base_merges_onto_that_base(adapter_dir, tiny_llm_dir,
                                                                 tmp_path, capsys) -> None:
    """The issue's form: `export --model BASE --adapter DIR --merge --output_dir OUT`, with
    BASE elsewhere than the adapter_config's path."""
    base = tmp_path / "base-copy"
    shutil.copytree(tiny_llm_dir, base)
    out = tmp_path / "merged"
    code, _, err = run(["export", "--model", str(base), "--adapter", str(adapter_dir), "--merge",
                        "--output_dir", str(out)], capsys)
    assert (code, err) == (0, "")
    record = json.loads((out / "tuneforge_export.json").read_text())
    assert record["model"] == str(base.resolve()) and record["merge_check"]["identical"]
    assert {p.name for p in out.iterdir()} == EXPORTED


def test_a_whole_model_alone_is_exported_as_it_is(tiny_llm_dir, tmp_path) -> None:
    import torch

    out = tmp_path / "whole"
    result = export_model(build_export_config({"model": str(tiny_llm_dir),
                                               "output_dir": str(out)}), Settings())
    assert result.record.adapter is None and result.gguf is None
    assert {p.name for p in out.iterdir()} == EXPORTED
    source, saved = load(tiny_llm_dir).state_dict(), load(out).state_dict()
    assert all(torch.equal(w, saved[n]) for n, w in source.items())
    assert "FROM .\n" in result.modelfile.read_text()


def _mistral_copy(tiny_llm_dir: Path, tmp_path: Path) -> Path:
    path = tmp_path / "mistral"
    shutil.copytree(tiny_llm_dir, path)
    config = json.loads((path / "config.json").read_text())
    config.update(model_type="mistral", architectures=["MistralForCausalLM"])
    (path / "config.json").write_text(json.dumps(config))
    return path


@pytest.mark.parametrize(("argv", "words"), [
    (["--adapter", "ADAPTER"], "adapter, merge: an adapter is exported merged into its base"),
    ([], "model, adapter: expected a base model, an adapter or both"),
    (["--adapter", "no-such-run", "--merge"], "adapter not found: 'no-such-run'"),
    (["--model", "MODEL", "--format", "onnx"], "format: expected 'safetensors' or 'gguf'"),
    (["--model", "MODEL", "--template", "nope"], "template not found: 'nope'"),
    (["--model", "MISTRAL", "--format", "gguf"], "only Llama-architecture models"),
    (["--model", "MODEL", "--adapter", "MODEL", "--merge"], "holds a whole fine-tuned model"),
])
def test_cli_mistakes_are_one_line_exit_2(argv, words, adapter_dir, tiny_llm_dir, tmp_path,
                                          capsys) -> None:
    names = {"ADAPTER": str(adapter_dir), "MODEL": str(tiny_llm_dir),
             "MISTRAL": str(_mistral_copy(tiny_llm_dir, tmp_path)) if "MISTRAL" in argv else ""}
    argv = [names.get(a, a) for a in argv]
    out_dir = tmp_path / "out"
    code, out, err = run(["export", *argv, "--output_dir", str(out_dir)], capsys)
    assert code == 2 and out == ""
    assert err.startswith("error: ") and err.count("\n") == 1 and words in err, err
    assert not out_dir.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_cli_refuses_to_replace_a_directory_that_is_not_an_export(tiny_llm_dir, tmp_path,
                                                                  capsys) -> None:
    code, _, err = run(["export", "--model", str(tiny_llm_dir), "--output_dir",
                        str(tiny_llm_dir)], capsys)
    assert code == 2 and "expected a new or empty directory, or an earlier export" in err
    assert (tiny_llm_dir / "model.safetensors").is_file()


@pytest.mark.slow
def test_smollm2_lora_exports_to_a_gguf_that_generates_like_the_merged_model(tmp_path) -> None:
    """SmolLM2-135M-Instruct (tied embeddings, 30 layers, 9 query / 3 key-value heads) with a
    random LoRA: the export's own checks hold, and the GGUF says what llama.cpp needs."""
    import torch
    from gguf import GGUFReader
    from peft import LoraConfig, get_peft_model

    from tuneforge.models import resolve_model

    base = resolve_model("smollm2-135m-instruct", Settings())
    torch.manual_seed(2)
    lora = LoraConfig(r=4, lora_alpha=8, init_lora_weights=False, task_type="CAUSAL_LM",
                      target_modules=["q_proj", "k_proj", "v_proj"])
    adapter = tmp_path / "adapter"
    get_peft_model(load(base), lora).save_pretrained(str(adapter))
    out = tmp_path / "smollm2-export"
    result = export_model(build_export_config({
        "model": "smollm2-135m-instruct", "adapter": str(adapter), "merge": True,
        "output_dir": str(out), "format": "gguf"}), Settings())
    assert result.record.merge_check.identical and result.record.gguf_check.identical
    fields = GGUFReader(str(out / "model.gguf")).fields
    assert fields["tokenizer.ggml.pre"].contents() == "gpt-2"
    assert "output.weight" not in {t.name for t in GGUFReader(str(out / "model.gguf")).tensors}
    assert 'SYSTEM """You are a helpful AI assistant named SmolLM' in result.modelfile.read_text()
