"""Supervised fine-tuning on {prompt, response} or {messages} JSONL (R1 cold start, rejection-sampling SFT,
distillation into Qwen/Llama students).

Examples:
  r1lab sft --data cold_start.jsonl --model runs/pretrain/final --epochs 2
  r1lab sft --data distill.jsonl --model path/to/local-qwen --lora-r 16 --template r1
Every field below can be given as --key value (dashes or underscores); --config FILE.json sets several at once.
"""

from __future__ import annotations

import json

from r1lab.config_cli import describe, load_config
from r1lab.train.sft import SFTConfig

NAME = "sft"
HELP = "supervised fine-tuning (response-only loss, packing, LoRA for HF models)"
ACCEPTS_OVERRIDES = True


def add_arguments(p) -> None:
    p.add_argument("--config", help="JSON file with SFTConfig fields (overrides on the command line win)")
    p.epilog = "SFTConfig fields:\n" + describe(SFTConfig)


def main(args) -> int:
    import logging

    from r1lab.train.sft import run_sft

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    summary = run_sft(load_config(SFTConfig, args.config, args.overrides))
    print(json.dumps(summary, default=str))
    return 0
