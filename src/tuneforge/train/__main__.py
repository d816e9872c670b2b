"""`python -m tuneforge.train [CONFIG] [--key value ...] [--no-events]`: train in this process.

torchrun and `accelerate launch` start it once per device (`tuneforge train --launcher torchrun`
does that for you). It takes the arguments of `tuneforge train` and never launches other
processes itself. Rank 0 logs progress to stderr (and train.log), the others only warnings;
a user error is logged on one line and exits 2.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

from tuneforge.config.load import load_run_config
from tuneforge.errors import UserError
from tuneforge.settings import Settings
from tuneforge.train.distributed import rank

logger = logging.getLogger("tuneforge.train")


def _log_progress(record: dict[str, Any]) -> None:
    loss = record["loss"] if record["loss"] is not None else record["eval_loss"]
    logger.info("step %d/%d loss %s, %s tokens/s", record["current_steps"],
                record["total_steps"], f"{loss:.4f}" if loss is not None else "-",
                record["tokens_per_s"])


def main(argv: list[str] | None = None) -> int:
    """Parse the arguments like `tuneforge train`, train, return the exit status."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] in (["--help"], ["-h"]):
        sys.stdout.write(__doc__ or "")
        return 0
    record_events = "--no-events" not in args  # a pipeline that launched it records them
    args = [a for a in args if a != "--no-events"]
    config_file = args.pop(0) if args and not args[0].startswith("--") else None
    handler = logging.StreamHandler()
    handler.setLevel(logging.INFO if rank() == 0 else logging.WARNING)
    handler.setFormatter(logging.Formatter(f"[rank {rank()}] %(levelname)s %(name)s: %(message)s"))
    logging.getLogger().addHandler(handler)
    logging.getLogger().setLevel(logging.INFO)

    from tuneforge.train.run import train

    try:
        outcome = train(load_run_config(config_file, overrides=args), Settings(),
                        progress=_log_progress, record_events=record_events)
    except UserError as exc:
        logger.error("%s", str(exc).replace("\n", "; "))
        return 2
    result = outcome.result
    logger.info("run %s: %s after %d steps", outcome.paths.root, result.status,
                result.global_step)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
