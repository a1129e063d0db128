"""Print total/active parameters, FLOPs per token and KV-cache bytes per token (latent vs expanded per-head).

Examples:
  r1lab info --preset deepseek-v3
  r1lab info --model runs/demo/model --seq-len 1024
"""

from __future__ import annotations

NAME = "info"
HELP = "parameters, FLOPs per token and KV-cache bytes of a preset or checkpoint"

import json

from ..model import DeepSeekV3Config, format_stats, list_presets, model_stats


def add_arguments(p) -> None:
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--preset", help=f"one of: {', '.join(list_presets())}")
    src.add_argument("--model", help="a checkpoint directory holding config.json")
    p.add_argument("--seq-len", type=int, default=4096, help="context length for the attention FLOPs (default 4096)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text")


def main(args) -> int:
    config = DeepSeekV3Config.from_preset(args.preset) if args.preset else DeepSeekV3Config.from_pretrained(args.model)
    stats = model_stats(config, seq_len=args.seq_len)
    if args.json:
        print(json.dumps({"source": args.preset or args.model, "seq_len": args.seq_len, **stats.as_dict()}))
    else:
        print(f"{args.preset or args.model}: {config.num_hidden_layers} layers, hidden {config.hidden_size}, "
              f"{config.n_routed_experts} routed experts (top-{config.num_experts_per_tok})")
        print(format_stats(stats, args.seq_len))
    return 0
