"""Embedding fine-tune benchmark: the demo's FAQ run (eval/faq_demo.py) timed; prints one JSON
object with the training and evaluation seconds, steps, peak RSS, and the base and
fine-tuned recall@1/5/10, MRR and nDCG@10 on the 200 held-out questions.

    .venv/bin/python bench/faq_embedding.py [--model minilm-l6-v2] [--set key=value ...]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import tempfile
import time
from pathlib import Path

from tuneforge.config.eval import build_eval_config
from tuneforge.config.load import load_run_config
from tuneforge.eval.faq_demo import EMBED_MODEL, faq_config
from tuneforge.eval.run import evaluate
from tuneforge.settings import Settings
from tuneforge.train.run import train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default=EMBED_MODEL)
    parser.add_argument("--set", nargs="*", default=[], help="training overrides, key=value")
    args = parser.parse_args()
    overrides = [part for item in args.set for part in (f"--{item.split('=', 1)[0]}",
                                                          item.split("=", 1)[1])]
    settings = Settings()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        config = faq_config(folder, args.model, overrides)
        start = time.perf_counter()
        outcome = train(config, settings)
        trained = time.perf_counter()
        eval_config = load_run_config(values={"model_name_or_path": args.model,
                                              "dataset": [str(folder / "test.json")]},
                                      source="bench")
        report = evaluate(eval_config, build_eval_config(
            {"adapter": str(outcome.paths.root), "compare_base": True}), settings)
        done = time.perf_counter()
    print(json.dumps({
        "benchmark": "faq_embedding", "model": args.model, "overrides": args.set,
        "steps": outcome.result.global_step, "train_s": round(trained - start, 1),
        "eval_s": round(done - trained, 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "rows": {r["name"]: {k: round(v, 4) for k, v in r["metrics"].items()}
                 for r in report["rows"]},
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
    }, indent=2))


if __name__ == "__main__":
    main()
