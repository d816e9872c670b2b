"""TrainableModule on tiny models: the seed's two chains as written (an LLM with
finetune.llamafactory; an embedding model with finetune.flagembedding, then Document and
Retriever), reuse of a fine-tune by target path, the frameworks' names, and the errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import tuneforge
from tuneforge import Document, Retriever, TrainableModule, deploy, finetune, launchers
from tuneforge.data.summary import demo_dataset_dir
from tuneforge.errors import ConfigError, NotFoundError
from tuneforge.lazy.finetune import alpacalora, flagembedding

IDENTITY = demo_dataset_dir() / "forge_identity.json"
PASSAGES = ["paris city weather sunny", "what capital france paris", "hello there how are you",
            "rainy today city", "sunny today hello"]


def test_the_llm_chain_fine_tunes_deploys_and_runs_the_eval_set(tiny_llm_dir: Path,
                                                                tmp_path: Path) -> None:
    target = tmp_path / "tuned"
    model = TrainableModule(str(tiny_llm_dir), target)\
        .mode('finetune')\
        .trainset(str(IDENTITY))\
        .evalset(["hello", "who are you?"])\
        .finetune_method((finetune.llamafactory, {
            'learning_rate': 1e-4,
            'cutoff_len': 128,
            'max_samples': 16,
            'val_size': 0.25,
            'per_device_train_batch_size': 2,
            'num_train_epochs': 1.0,
            'launcher': launchers.empty(),
        }))\
        .deploy_method(deploy.auto, max_tokens=4)
    assert model.needs_update
    model.update()
    assert not model.needs_update
    assert (target / "adapter_config.json").is_file()  # the LoRA adapter, at target_path
    trainer = model.trainer
    assert trainer is not None and trainer.status == "ModelPublished"
    config = (trainer.paths.root / "config.yaml").read_text()
    assert "max_samples: 16" in config and "max_length: 128" in config
    assert len(model.eval_result) == 2 and all(isinstance(a, str) for a in model.eval_result)
    assert isinstance(model("hello"), str)
    model.stop()


def test_the_embedding_chain_tunes_then_indexes_and_a_fine_tune_is_reused(
        tiny_embedder_dir: Path, tmp_path: Path) -> None:
    rows = [{"query": p.split()[0], "pos": [p], "neg": [PASSAGES[i - 1]]}
            for i, p in enumerate(PASSAGES)]
    train_data = tmp_path / "train.jsonl"
    train_data.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    kb = tmp_path / "kb"
    kb.mkdir()
    (kb / "notes.md").write_text("\n".join(PASSAGES) + "\n", encoding="utf-8")
    target = tmp_path / "sft" / "embed"

    embed = TrainableModule(str(tiny_embedder_dir), str(target))\
        .mode('finetune').trainset(str(train_data))\
        .finetune_method((
            tuneforge.finetune.flagembedding,
            {
                'launcher': tuneforge.launchers.local(nnode=1, nproc=1),
                'per_device_train_batch_size': 4,
                'num_train_epochs': 2,
                'train_group_size': 2,
            }
        ))
    docs = Document(str(kb), embed=embed, manager=False)
    docs.create_node_group(name='split_sent', transform=lambda s: s.split('\n'))
    retriever = tuneforge.Retriever(doc=docs, group_name="split_sent", similarity="cosine",
                                    topk=2)
    retriever.update()
    assert not embed.needs_update and (target / "modules.json").is_file()
    nodes = retriever("paris weather")
    assert len(nodes) == 2 and all(n.text in PASSAGES for n in nodes)
    assert nodes[0].similarity_score >= nodes[1].similarity_score

    reused = TrainableModule(str(tiny_embedder_dir), str(target))  # the seed's last line
    assert reused("paris") == pytest.approx(embed("paris"), abs=1e-5)
    again = Retriever(doc=Document(str(kb), embed=reused), group_name="lazyllm_root", topk=1)
    assert [n.text.strip() for n in again("paris")] == ["\n".join(PASSAGES)]


def test_a_tuned_embedding_model_is_measured_on_a_retrieval_evalset(
        tiny_embedder_dir: Path, tmp_path: Path) -> None:
    evalset = tmp_path / "test.json"
    evalset.write_text(json.dumps({"queries": {"q": "paris"},
                                   "corpus": {"a": PASSAGES[0], "b": PASSAGES[2]},
                                   "qrels": {"q": {"a": 1}}}), encoding="utf-8")
    module = TrainableModule(str(tiny_embedder_dir)).evalset(str(evalset)).update()
    assert set(module.eval_result) == {"recall@1", "recall@5", "recall@10", "mrr", "ndcg@10"}


def test_framework_names_map_onto_runconfig() -> None:
    options, launcher = alpacalora.options({"micro_batch_size": 2, "batch_size": 8,
                                            "num_epochs": 2, "lora_r": 4,
                                            "lora_target_modules": ["q_proj"]})
    assert launcher is None
    assert options == {"finetuning_type": "lora", "per_device_train_batch_size": 2,
                       "gradient_accumulation_steps": 4, "epochs": 2, "lora_rank": 4,
                       "lora_target": ["q_proj"], "stage": "sft"}
    with pytest.warns(UserWarning, match="negatives_cross_device.*no effect"):
        options, _ = flagembedding.options({"query_max_len": 64, "passage_max_len": 256,
                                            "negatives_cross_device": True}, encoder="rerank")
    assert options == {"max_length": 256, "stage": "rerank"}


def test_mistakes_get_clear_errors(tiny_llm_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="base_model"):
        TrainableModule("")
    module = TrainableModule(str(tiny_llm_dir))
    with pytest.raises(ConfigError, match="expected one of server, finetune"):
        module.mode("train")
    with pytest.raises(ConfigError, match="finetune.llamafactory"):
        module.finetune_method(("colossal", {}))
    with pytest.raises(ConfigError, match="trainset"):
        module.mode("finetune").update()
    with pytest.raises(ConfigError, match=r"num_train_epoch"):
        module.trainset(str(IDENTITY)).finetune_method(
            (finetune.llamafactory, {"num_train_epoch": 1})).update()
    with pytest.raises(NotFoundError, match="fine-tune"):
        TrainableModule(str(tiny_llm_dir), tmp_path / "missing").start()


def test_lazyllm_names_are_reachable_from_the_package() -> None:
    names: dict[str, Any] = {n: getattr(tuneforge, n) for n in tuneforge.__all__}
    assert names["finetune"].flagembedding is flagembedding
    assert callable(names["launchers"].sco)
    with pytest.raises(AttributeError):
        tuneforge.nothing  # noqa: B018


def test_without_a_finetune_method_the_model_decides_the_stage(tiny_embedder_dir: Path,
                                                               tmp_path: Path) -> None:
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps({"query": p.split()[0], "pos": [p]}) + "\n"
                            for p in PASSAGES), encoding="utf-8")
    module = TrainableModule(str(tiny_embedder_dir)).mode("finetune").trainset(data).update()
    assert module.trainer is not None and module.trainer.stage == "embedding"
    assert len(module("paris")) == 32


@pytest.mark.serial
def test_a_torchrun_launcher_trains_with_two_cpu_processes(tiny_llm_dir: Path) -> None:
    model = TrainableModule(str(tiny_llm_dir)).mode("finetune").trainset(str(IDENTITY))\
        .finetune_method((finetune.llamafactory, {
            "max_steps": 2, "cutoff_len": 64, "per_device_train_batch_size": 2,
            "launcher": launchers.torchrun(nproc=2)}))
    model.update()
    trainer = model.trainer
    assert trainer is not None and trainer.status == "ModelPublished"
    log = (trainer.paths.root / "train.log").read_text()
    assert "2 processes, backend gloo" in log  # DDP on CPU, rank 0 writing
    assert (model.finetuned_path / "adapter_config.json").is_file()
