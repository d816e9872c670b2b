"""The embedding and rerank stages (train/encoder.py) on tiny BERTs: rows and negatives, a
run of each loss with its checkpoints, log and servable output, hard-negative mining, stop
and resume through EmbeddingFinetune, and the config rules."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest

from tuneforge.config.load import load_run_config
from tuneforge.errors import ConfigError
from tuneforge.serve.encoders import EncoderEngine, encoder_kind
from tuneforge.server.models import ServedModels
from tuneforge.settings import Settings
from tuneforge.train.encoder import (
    QueryGroup,
    embedding_rows,
    listwise_rows,
    pointwise_rows,
    query_groups,
)
from tuneforge.train.run import train
from tuneforge.trainer import EmbeddingFinetune, Event, EventHandler, RerankerFinetune, TrainConfig

WORDS = ["what capital", "france paris", "city weather", "sunny rainy", "hello there",
         "how are you", "today sunny", "paris city"]
ROWS = [{"query": f"{a} ?", "pos": [f"{a} {b}"], "neg": [f"{b} today"] if i % 2 else []}
        for i, (a, b) in enumerate(zip(WORDS, [*WORDS[1:], WORDS[0]], strict=True))]


def write_rows(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def config(model: Path, data: Path, tmp_path: Path, **values: Any) -> Any:
    return load_run_config(values={
        "model_name_or_path": str(model), "dataset": str(data),
        "output_dir": str(tmp_path / "run"), "max_steps": 4, "logging_steps": 1,
        "save_steps": 2, "per_device_train_batch_size": 4, "learning_rate": 1e-3, **values},
        source="test")


def test_groups_and_rows_fill_negatives_from_the_record_then_mined_then_others() -> None:
    groups = [QueryGroup("q1", [("p1", 1.0)], ["n1"]), QueryGroup("q2", [("p2", 1.0)]),
              QueryGroup("q3", [("p3", 1.0), ("p3b", 1.0)])]
    values = load_run_config(values={"stage": "embedding", "train_group_size": 3,
                                     "dataset": ["x"]}, source="test")
    rows = embedding_rows(groups, {"q2": ["m2"]}, values)
    assert rows.column_names == ["anchor", "positive", "negative_1", "negative_2"]
    assert len(rows) == 4  # one row per positive
    first, second = rows[0], rows[1]
    assert first["negative_1"] == "n1" and first["negative_2"] in {"p2", "p3", "p3b"}
    assert second["negative_1"] == "m2"
    for row in rows:  # never a positive of its own query
        own = {"q1": {"p1"}, "q2": {"p2"}, "q3": {"p3", "p3b"}}[row["anchor"]]
        assert not own & {row["negative_1"], row["negative_2"]}
    listwise = listwise_rows(groups, {}, values)
    assert listwise[0]["docs"][0] == "p1" and listwise[0]["labels"] == [1.0, 0.0, 0.0]
    pointwise = pointwise_rows(groups, {}, values)
    assert pointwise["label"][:3] == [1.0, 0.0, 0.0]


def test_rerank_records_gather_by_query() -> None:
    from tuneforge.data.records import Location, RerankExample

    loc = Location("f", 1)
    groups = query_groups([RerankExample("q", "a", 1.0, loc), RerankExample("q", "b", 0.0, loc),
                           RerankExample("r", "c", 0.0, loc)])
    assert [(g.query, g.positives, g.negatives) for g in groups] == [("q", [("a", 1.0)], ["b"])]


def test_an_embedding_run_writes_its_log_checkpoints_and_a_servable_model(
        tiny_embedder_dir: Path, tmp_path: Path) -> None:
    data = write_rows(tmp_path / "train.jsonl", ROWS)
    outcome = train(config(tiny_embedder_dir, data, tmp_path, stage="embedding",
                           val_size=0.25, mine_hard_negatives=1, query_instruction="q: "),
                    Settings())
    result = outcome.result
    assert result.status == "completed" and result.global_step == 4
    assert "eval_loss" in result.metrics
    log = [json.loads(line) for line in outcome.paths.trainer_log.read_text().splitlines()]
    assert [r["current_steps"] for r in log if r["loss"] is not None] == [1, 2, 3, 4]
    assert (outcome.paths.checkpoints / "checkpoint-2" / "modules.json").is_file()
    output = outcome.paths.output
    assert encoder_kind(output) == "embedding"
    st_config = json.loads((output / "config_sentence_transformers.json").read_text())
    assert st_config["prompts"]["query"] == "q: "
    vectors, _ = EncoderEngine(str(output), Settings()).embed(["hello there", "paris"])
    assert len(vectors) == 2 and abs(sum(v * v for v in vectors[0]) - 1) < 1e-4


@pytest.mark.parametrize("loss", ["listwise", "pointwise"])
def test_a_reranker_trains_from_a_plain_encoder(tiny_bert_dir: Path, tmp_path: Path,
                                                loss: str) -> None:
    data = write_rows(tmp_path / "train.jsonl", ROWS)
    outcome = train(config(tiny_bert_dir, data, tmp_path, stage="rerank", rerank_loss=loss),
                    Settings())
    assert outcome.result.status == "completed"
    assert encoder_kind(outcome.paths.output) == "rerank"
    scores, _ = EncoderEngine(str(outcome.paths.output), Settings()).rerank(
        "hello there", ["hello there how", "paris city"])
    assert len(scores) == 2 and all(0 <= s <= 1 for s in scores)


def test_encoder_stages_train_whole_models() -> None:
    with pytest.raises(ConfigError, match="trains the whole encoder.*finetuning_type=lora"):
        load_run_config(values={"stage": "embedding", "finetuning_type": "lora",
                                "dataset": ["x"]}, source="test")
    values = load_run_config(values={"stage": "rerank", "dataset": ["x"],
                                     "query_instruction_for_retrieval": "q: "}, source="test")
    assert (values.method.finetuning_type, values.method.query_instruction) == ("full", "q: ")


class StopAt(EventHandler):
    def __init__(self, step: int) -> None:
        self.step = step
        self.trainer: Any = None

    def dispatch(self, event: Event) -> None:
        data = event.data if isinstance(event.data, dict) else {}
        if data.get("current_steps") == self.step:
            threading.Thread(target=self.trainer.stop).start()


def test_embedding_finetune_stops_resumes_evaluates_and_publishes(
        tiny_embedder_dir: Path, tmp_path: Path) -> None:
    data = write_rows(tmp_path / "train.jsonl", ROWS * 3)
    handler = StopAt(2)
    trainer = EmbeddingFinetune(
        train_type=str(tiny_embedder_dir), dataset=str(data), event_handler=handler,
        train_config=TrainConfig(epoch=1, batch_size=4, learning_rate=1e-3, trainset_rate=25,
                                 extras={"logging_steps": 1, "save_steps": 1}))
    handler.trainer = trainer
    trainer.run()
    assert trainer.status == "TrainStopped"
    trainer.resume()
    assert trainer.status == "ModelPublished", trainer.result
    report = trainer.get_evaluate_result()
    assert report["kind"] == "retrieval" and set(report["rows"][0]["metrics"]) >= {"mrr"}
    assert encoder_kind(Path(trainer.output["output_dir"])) == "embedding"
    served = ServedModels(Settings()).load_model(trainer.run_id)  # /v1/embeddings serves it
    assert served.kind == "embedding" and len(served.engine.embed(["paris"])[0][0]) == 32
    steps = [r["current_steps"] for r in trainer.get_log() if r["loss"] is not None]
    assert steps == sorted(set(steps)) and steps[0] == 1  # resumed, not restarted


def test_reranker_finetune_is_an_sdk_trainer(tiny_bert_dir: Path, tmp_path: Path) -> None:
    data = write_rows(tmp_path / "train.jsonl", ROWS)
    trainer = RerankerFinetune(
        train_type=str(tiny_bert_dir), dataset=str(data),
        train_config=TrainConfig(epoch=1, batch_size=4, trainset_rate=0,
                                 extras={"max_steps": 2}))
    trainer.run()
    assert trainer.status == "ModelPublished", trainer.result
    assert encoder_kind(Path(trainer.output["output_dir"])) == "rerank"
    served = ServedModels(Settings()).load_model(trainer.run_id)  # what `serve` does with it
    assert served.kind == "rerank"
    scores, _ = served.engine.rerank("hello there", ["hello there how", "paris city"])
    assert len(scores) == 2


def test_the_training_service_picks_the_encoder_stage_from_the_data(tmp_path: Path) -> None:
    from tuneforge.server.jobs import data_stage

    pairs = write_rows(tmp_path / "pairs.jsonl", ROWS)
    labelled = write_rows(tmp_path / "labelled.jsonl",
                          [{"query": "q", "passage": "p", "label": 1}])
    assert (data_stage(pairs), data_stage(labelled)) == ("embedding", "rerank")
