"""LLaMA-Factory's own demo datasets load by name with their dataset_info.json unchanged."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tuneforge.config import load_run_config
from tuneforge.data.dataset_info import DatasetInfo, resolve_dataset
from tuneforge.data.load import load_data, read_dataset
from tuneforge.data.records import ChatExample, PreferenceExample, TextExample
from tuneforge.errors import NotFoundError, UnsupportedError

EXPECTED = {
    "identity": ("sft", 91),
    "alpaca_en_demo": ("sft", 999),
    "alpaca_zh_demo": ("sft", 1000),
    "glaive_toolcall_en_demo": ("sft", 300),
    "dpo_en_demo": ("pairwise", 300),
    "wiki_demo": ("pt", 30),
    "c4_demo": ("pt", 300),
}


@pytest.mark.parametrize(("name", "expected"), EXPECTED.items())
def test_peer_demo_dataset_loads_by_name(peer_data: Path, name: str, expected) -> None:
    dataset = read_dataset(resolve_dataset(name, peer_data), strict=True)
    assert (dataset.kind, len(dataset.examples)) == expected
    assert dataset.report.dropped == 0


def test_every_entry_either_loads_or_says_why(peer_data: Path) -> None:
    info = DatasetInfo(peer_data)
    outcomes: dict[str, int] = {"loaded": 0, "offline": 0, "multimodal": 0, "missing": 0}
    for name in info.entries:
        try:
            read_dataset(resolve_dataset(name, peer_data))
            outcomes["loaded"] += 1
        except UnsupportedError as exc:
            outcomes["offline" if "offline" in str(exc) else "multimodal"] += 1
        except NotFoundError as exc:
            assert exc.kind == "data file"
            outcomes["missing"] += 1
    assert outcomes["loaded"] == len(EXPECTED)
    assert outcomes["offline"] > 50 and outcomes["multimodal"] > 5


def test_toolcall_demo_keeps_tools_and_calls(peer_data: Path) -> None:
    dataset = read_dataset(resolve_dataset("glaive_toolcall_en_demo", peer_data))
    with_calls = [e for e in dataset.examples if any(m.tool_calls for m in e.messages)]
    assert with_calls and all(isinstance(e, ChatExample) and e.tools for e in with_calls)
    assert any(m.role == "tool" for m in with_calls[0].messages)


def test_chinese_text_is_intact(peer_data: Path) -> None:
    raw = json.loads((peer_data / "alpaca_zh_demo.json").read_text(encoding="utf-8"))
    dataset = read_dataset(resolve_dataset("alpaca_zh_demo", peer_data))
    assert dataset.examples[0].messages[-1].content == raw[0]["output"]


def test_dpo_and_pt_records(peer_data: Path) -> None:
    dpo = read_dataset(resolve_dataset("dpo_en_demo", peer_data)).examples[0]
    assert isinstance(dpo, PreferenceExample) and dpo.prompt[-1].role == "user"
    wiki = read_dataset(resolve_dataset("wiki_demo", peer_data)).examples[0]
    assert isinstance(wiki, TextExample) and wiki.text.startswith("Anarchism")


def test_several_names_with_eval_split_through_the_config(peer_data: Path) -> None:
    config = load_run_config(values={"dataset": "identity,alpaca_en_demo",
                                     "dataset_dir": str(peer_data), "val_size": 0.1,
                                     "max_samples": 100})
    bundle = load_data(config.data, stage="sft", seed=1)
    assert (len(bundle.train), len(bundle.eval)) == (172, 19)
    again = load_data(config.data, stage="sft", seed=1)
    assert [e.loc for e in again.eval] == [e.loc for e in bundle.eval]


def test_pt_stage_reads_an_alpaca_entry_as_text(peer_data: Path) -> None:
    config = load_run_config(values={"dataset": "identity", "dataset_dir": str(peer_data)})
    bundle = load_data(config.data, stage="pt")
    assert bundle.kind == "pt" and bundle.train[0].text == "hi"
