"""The REST-service seed's examples, run as written against a real `tuneforge serve` (only
the model path and the server's address filled in)."""

from __future__ import annotations

from pathlib import Path

import pytest
import requests

from live_server import Server, wait_for

pytestmark = pytest.mark.serial


def test_the_seed_examples_train_monitor_load_and_generate(service: Server, workdir: Path,
                                                           tiny_llm_dir: Path) -> None:
    base = service.url
    # 开始训练 / 使用API
    response = requests.post(
        f"{base}/train",
        json={
            "base_model": str(tiny_llm_dir),
            "dataset_path": "data/train.json",
            "output_dir": "models/checkpoints/my_task",
            "num_epochs": 3,
            "batch_size": 4,
            "learning_rate": 2e-4,
            "dataset_format": "json"
        }, timeout=60
    )
    assert response.status_code == 200, response.text
    task_id = response.json()["task_id"]

    # 查询训练状态
    seen = []
    while True:
        response = requests.get(f"{base}/train/status/{task_id}", timeout=60)
        status = response.json()
        seen.append(status["status"])
        assert 0 <= status["progress"] <= 100
        if status["status"] in ["completed", "failed"]:
            break
        assert status["status"] in ("queued", "running")
        import time
        time.sleep(0.2)
    assert status["status"] == "completed", status
    assert status["progress"] == 100.0
    assert status["total_steps"] == status["current_step"] > 0

    # 查看训练历史
    response = requests.get(f"{base}/train/history", timeout=60)
    tasks = response.json()["tasks"]
    assert [t["task_id"] for t in tasks if t["task_id"] == task_id]
    for task in tasks:
        assert f"{task['task_id']}: {task['status']} - {task['progress']:.2f}%"

    # 训练完成后，LoRA适配器保存在 output_dir/lora_adapter 目录
    adapter = workdir / "models" / "checkpoints" / "my_task" / "lora_adapter"
    assert (adapter / "adapter_config.json").is_file()
    assert status["adapter_path"] == str(adapter)

    # 加载LoRA适配器
    response = requests.post(
        f"{base}/models/load",
        json={
            "model_name": "my-fine-tuned-model",
            "model_path": str(tiny_llm_dir),
            "lora_adapter": "models/checkpoints/my_task/lora_adapter"
        }, timeout=60
    )
    assert response.status_code == 200, response.text

    # 使用模型生成
    response = requests.post(
        f"{base}/generate",
        json={
            "prompt": "用户：你好\n助手：",
            "model_name": "my-fine-tuned-model",
            "max_tokens": 8
        }, timeout=60
    )
    assert response.status_code == 200, response.text
    assert isinstance(response.json()["text"], str)

    # 评估模型性能（使用`/evaluate`接口）
    response = requests.post(f"{base}/evaluate", json={
        "task_id": task_id, "dataset_path": "data/train.json"}, timeout=120)
    assert response.status_code == 200, response.text
    assert response.json()


def test_lora_defaults_come_from_config_models_yaml(service: Server, tiny_llm_dir: Path) -> None:
    task_id = service.http.post("/train", json={
        "base_model": str(tiny_llm_dir), "dataset_path": "data/chat.jsonl",
        "max_steps": 2}).json()["task_id"]
    status = wait_for(service, task_id, ("completed", "failed"))
    assert status["state"] == "completed", status
    assert status["stage"] == "sft"
    import json
    config = json.loads((Path(status["adapter_path"]) / "adapter_config.json").read_text())
    assert config["r"] == 4 and config["lora_alpha"] == 8
    assert sorted(config["target_modules"]) == ["k_proj", "o_proj", "q_proj", "v_proj"]
