"""Tokenizer loading: packaged GGUF alias converted once, local paths, clear not-found errors."""

from __future__ import annotations

import filecmp
from pathlib import Path
from typing import Any

import pytest

from tuneforge.data.tokenizer import load_tokenizer, packaged_gguf, tokenizer_digest
from tuneforge.errors import DataError, NotFoundError

ALIAS = "smollm2-135m-instruct"


def test_alias_is_converted_once_and_then_read_from_the_cache(smollm2_cache: Path) -> None:
    target = smollm2_cache / "tokenizers" / ALIAS
    assert (target / "tokenizer.json").is_file()
    before = {p.name: p.stat().st_mtime_ns for p in target.iterdir()}
    tokenizer = load_tokenizer(ALIAS, smollm2_cache)
    assert {p.name: p.stat().st_mtime_ns for p in target.iterdir()} == before
    assert [p.name for p in (smollm2_cache / "tokenizers").iterdir()] == [ALIAS]
    assert (len(tokenizer), tokenizer.eos_token) == (49152, "<|im_end|>")
    assert "You are a helpful AI assistant named SmolLM" in tokenizer.chat_template


def test_unknown_alias_raises_not_found_naming_it(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError) as info:
        load_tokenizer("smollm9-instruct", tmp_path)
    assert info.value.name == "smollm9-instruct"
    assert ALIAS in (info.value.hint or "")


@pytest.mark.parametrize("name", ["missing-dir", "missing.gguf", "sub/dir/missing"])
def test_missing_path_raises_not_found_naming_it(tmp_path: Path, name: str) -> None:
    spec = str(tmp_path / name)
    with pytest.raises(NotFoundError) as info:
        load_tokenizer(spec, tmp_path)
    assert info.value.name == spec


def test_directory_without_a_tokenizer_raises_not_found(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(NotFoundError):
        load_tokenizer(str(tmp_path / "empty"), tmp_path)


def test_hub_id_outside_the_local_cache_says_there_is_no_network(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError) as info:
        load_tokenizer("tuneforge-tests/absent-model", tmp_path)
    assert "network" in (info.value.hint or "")


def test_local_directory_loads_as_saved(tiny_tokenizer_dir: Path, tiny_tokenizer: Any) -> None:
    tokenizer = load_tokenizer(str(tiny_tokenizer_dir), tiny_tokenizer_dir / "unused-cache")
    assert tokenizer.chat_template == tiny_tokenizer.chat_template
    assert tokenizer("你好 hello")["input_ids"] == tiny_tokenizer("你好 hello")["input_ids"]
    assert not (tiny_tokenizer_dir / "unused-cache").exists()


def test_digest_follows_the_chat_template(tiny_tokenizer_dir: Path, tmp_path: Path) -> None:
    first = load_tokenizer(str(tiny_tokenizer_dir), tmp_path)
    second = load_tokenizer(str(tiny_tokenizer_dir), tmp_path)
    assert tokenizer_digest(first) == tokenizer_digest(second)
    second.chat_template = "{{ messages[0]['content'] }}"
    assert tokenizer_digest(first) != tokenizer_digest(second)


@pytest.mark.slow
def test_alias_conversion_gives_the_files_autotokenizer_gives(
    smollm2_cache: Path, tmp_path: Path
) -> None:
    from transformers import AutoTokenizer

    gguf = packaged_gguf(ALIAS)
    AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name).save_pretrained(tmp_path)
    names = ["tokenizer.json", "tokenizer_config.json", "chat_template.jinja"]
    match, mismatch, errors = filecmp.cmpfiles(smollm2_cache / "tokenizers" / ALIAS, tmp_path,
                                               names, shallow=False)
    assert (mismatch, errors) == ([], [])


@pytest.mark.slow
def test_gguf_path_is_converted_into_a_directory_named_by_its_hash(tmp_path: Path) -> None:
    tokenizer = load_tokenizer(str(packaged_gguf(ALIAS)), tmp_path)
    (entry,) = (tmp_path / "tokenizers").iterdir()
    assert len(entry.name) == 40 and (entry / "tokenizer.json").is_file()
    assert len(tokenizer) == 49152


def test_a_file_that_is_not_gguf_is_a_user_error(tmp_path: Path) -> None:
    bad = tmp_path / "model.gguf"
    bad.write_bytes(b"not a gguf file")
    with pytest.raises(DataError) as info:
        load_tokenizer(str(bad), tmp_path / "cache")
    assert info.value.first.file == str(bad)
    assert "GGUF" in info.value.first.message
    assert not (tmp_path / "cache" / "tokenizers").exists() or not any(
        (tmp_path / "cache" / "tokenizers").iterdir())
