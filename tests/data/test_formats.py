"""data/formats.py through the loader: each format becomes its canonical records."""

from __future__ import annotations

from pathlib import Path

from tuneforge.data.dataset_info import resolve_dataset
from tuneforge.data.load import read_dataset
from tuneforge.data.records import (
    ChatExample,
    EmbeddingExample,
    KTOExample,
    Message,
    PreferenceExample,
    RerankExample,
    TextExample,
    ToolCall,
)


def load(path: Path, **kwargs):
    return read_dataset(resolve_dataset(str(path), path.parent), strict=True, **kwargs)


def test_alpaca_joins_input_to_instruction_with_a_newline(write) -> None:
    path = write("a.json", [{"instruction": "翻译", "input": "hello", "output": "你好",
                             "system": "be brief",
                             "history": [["q1", "a1"], ["q2", "a2"]]}])
    dataset = load(path)
    assert dataset.kind == "sft"
    (example,) = dataset.examples
    assert isinstance(example, ChatExample)
    assert example.system == "be brief"
    assert [m.content for m in example.messages] == ["q1", "a1", "q2", "a2", "翻译\nhello", "你好"]
    assert [m.role for m in example.messages] == ["user", "assistant"] * 3


def test_alpaca_ranking_output_pair_is_the_seed_rw_format(write) -> None:
    path = write("rw.json", [{"instruction": "生成三个与“道歉”意思相同的动词", "input": "",
                              "output": ["承认，表示遗憾，弥补。", "道歉"]}])
    (example,) = load(path).examples
    assert isinstance(example, PreferenceExample)
    assert example.chosen.content == "承认，表示遗憾，弥补。"
    assert example.rejected.content == "道歉"


def test_explicit_chosen_rejected_columns(write) -> None:
    path = write("p.jsonl", '{"prompt": "2+2?", "chosen": "4", "rejected": "5"}\n')
    (example,) = load(path).examples
    assert isinstance(example, PreferenceExample)
    assert example.prompt == (Message("user", "2+2?"),)
    assert (example.chosen.content, example.rejected.content) == ("4", "5")


def test_trl_conversational_preference(write) -> None:
    path = write("p.jsonl", '{"prompt": [{"role": "user", "content": "hi"}], '
                            '"chosen": [{"role": "assistant", "content": "hello"}], '
                            '"rejected": [{"role": "assistant", "content": "go away"}]}\n')
    (example,) = load(path).examples
    assert example.chosen.content == "hello"


def test_sharegpt_keeps_system_tools_function_calls_and_observations(write) -> None:
    path = write("s.json", [{
        "conversations": [
            {"from": "system", "value": "你是助手"},
            {"from": "human", "value": "weather?"},
            {"from": "function_call", "value": '{"name": "get_weather", "arguments": {"c": "x"}}'},
            {"from": "observation", "value": '{"t": 20}'},
            {"from": "gpt", "value": "20 度"},
        ],
        "tools": '[{"name": "get_weather"}]',
    }])
    (example,) = load(path).examples
    assert example.system == "你是助手"
    assert example.tools == '[{"name": "get_weather"}]'
    roles = [m.role for m in example.messages]
    assert roles == ["user", "assistant", "tool", "assistant"]
    assert example.messages[1].tool_calls == (ToolCall("get_weather", '{"c": "x"}'),)


def test_sharegpt_ranking_with_chosen_rejected_turns(write) -> None:
    path = write("d.json", [{"conversations": [{"from": "human", "value": "q"}],
                             "chosen": {"from": "gpt", "value": "good"},
                             "rejected": {"from": "gpt", "value": "bad"}}])
    (example,) = load(path).examples
    assert isinstance(example, PreferenceExample)
    assert example.prompt == (Message("user", "q"),)


def test_openai_messages_with_weights_tools_and_tool_turns(write) -> None:
    path = write("o.jsonl", (
        '{"messages": [{"role": "system", "content": "sys"}, '
        '{"role": "user", "content": "weather in 北京?"}, '
        '{"role": "assistant", "content": null, "tool_calls": [{"id": "c1", "type": "function", '
        '"function": {"name": "get_weather", "arguments": "{\\"city\\": \\"北京\\"}"}}], '
        '"weight": 0}, '
        '{"role": "tool", "content": "sunny"}, '
        '{"role": "assistant", "content": "晴天", "weight": 1}], '
        '"tools": [{"type": "function", "function": {"name": "get_weather"}}]}\n'
    ))
    (example,) = load(path).examples
    assert isinstance(example, ChatExample)
    assert example.system == "sys"
    assert [m.role for m in example.messages] == ["user", "assistant", "tool", "assistant"]
    assert example.messages[1].weight == 0
    assert example.messages[1].tool_calls[0].arguments == '{"city": "北京"}'
    assert example.messages[3].weight == 1
    assert '"get_weather"' in (example.tools or "")


def test_openai_dpo_jsonl(write) -> None:
    path = write("dpo.jsonl", (
        '{"input": {"messages": [{"role": "user", "content": "hi"}], "tools": []}, '
        '"preferred_output": [{"role": "assistant", "content": "hello"}], '
        '"non_preferred_output": [{"role": "assistant", "content": "what"}]}\n'
    ))
    dataset = load(path)
    assert dataset.kind == "pairwise"
    assert dataset.examples[0].rejected.content == "what"


def test_kto_tag_makes_kto_records(write) -> None:
    path = write("k.json", [{"instruction": "q", "input": "", "output": "a", "kto_tag": False}])
    (example,) = load(path).examples
    assert isinstance(example, KTOExample)
    assert example.label is False


def test_pt_text_from_txt_and_json(write) -> None:
    txt = write("p.txt", "one\ntwo\n")
    jsonl = write("p.jsonl", '{"text": "三"}\n')
    assert [e.text for e in load(txt).examples] == ["one", "two"]
    assert load(jsonl).examples == [TextExample("三", load(jsonl).examples[0].loc)]
    assert load(txt).kind == "pt"


def test_flagembedding_rows_become_embedding_or_rerank_records(write) -> None:
    path = write("e.jsonl", '{"query": "q", "pos": ["p"], "neg": ["n1", "n2"], '
                            '"prompt": "Represent this"}\n')
    (example,) = load(path).examples
    assert isinstance(example, EmbeddingExample)
    assert example.neg == ("n1", "n2")
    assert example.prompt == "Represent this"
    rerank = load(path, want="rerank").examples
    assert [(r.passage, r.label) for r in rerank] == [("p", 1.0), ("n1", 0.0), ("n2", 0.0)]


def test_rerank_triples(write) -> None:
    path = write("r.csv", "query,passage,label\nq,p,1\n")
    assert load(path).examples[0].label == 1.0
    path = write("r.jsonl", '{"query": "q", "passage": "p", "label": 1}\n')
    assert load(path).examples == [RerankExample("q", "p", 1.0, load(path).examples[0].loc)]


def test_csv_and_parquet_alpaca(write, tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    csv_path = write("a.csv", "instruction,input,output\n写诗,,春眠不觉晓\n")
    assert load(csv_path).examples[0].messages[-1].content == "春眠不觉晓"
    parquet = tmp_path / "data" / "a.parquet"
    pq.write_table(pa.table({"instruction": ["q"], "input": [""], "output": ["a"]}), parquet)
    assert load(parquet).kind == "sft"


def test_bad_rows_are_dropped_and_counted_when_not_strict(write) -> None:
    path = write("a.jsonl", (
        '{"instruction": "q", "output": "a"}\n'
        '{"instruction": "q", "output": ""}\n'
        '{"instruction": "q"}\n'
        '{"instruction": "q", "output": "a"}\n'
    ))
    dataset = read_dataset(resolve_dataset(str(path), path.parent))
    assert len(dataset.examples) == 2
    assert dataset.report.rows == 4
    assert dict(dataset.report.reasons) == {"empty response": 1, "missing column": 1}
    assert [(i.line, i.field) for i in dataset.report.issues] == [(2, "output"), (3, "output")]
