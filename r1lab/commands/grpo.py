"""R1-Zero-style RL with GRPO and rule rewards (DeepSeekMath §4.1, DeepSeek-R1 §2.2).

Examples:
  r1lab grpo --model runs/pretrain/final --steps 60                  # CPU R1-Zero demo on built-in tasks
  r1lab grpo --model M --tasks-jsonl my_tasks.jsonl --beta 0.04 --aggregation paper
  torchrun --nproc-per-node 2 -m r1lab.cli grpo --model M           # data-parallel rollouts and updates
Every field below can be given as --key value (dashes or underscores); --config FILE.json sets several at once.
"""

from __future__ import annotations

import json
import os

from r1lab.config_cli import describe, load_config
from r1lab.rl.grpo import GRPOConfig

NAME = "grpo"
HELP = "GRPO reinforcement learning with rule rewards (R1-Zero style)"
ACCEPTS_OVERRIDES = True


def add_arguments(p) -> None:
    p.add_argument("--config", help="JSON file with GRPOConfig fields (overrides on the command line win)")
    p.epilog = "GRPOConfig fields:\n" + describe(GRPOConfig)


def main(args) -> int:
    import logging

    from r1lab.rl.grpo import run_grpo

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    cfg = load_config(GRPOConfig, args.config, args.overrides)
    summary = run_grpo(cfg)
    if os.environ.get("RANK", "0") == "0":
        print(json.dumps({k: v for k, v in summary.items() if k != "last_metrics"}, default=str))
    return 0
