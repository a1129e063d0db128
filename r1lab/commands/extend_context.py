"""Extend a pretrained model's context with YaRN in phases (DeepSeek-V3 §4.3, scaled down), then probe passkey
retrieval at every length for the base and the extended model.

Examples:
  r1lab extend-context --model-dir runs/demo/model --phases [256,512] --steps [400,1000] --out-dir runs/extend
  r1lab extend-context --model-dir runs/gpu/model --phases [2048,4096] --steps [500,500] --micro-batch [16,8]
"""

from __future__ import annotations

NAME = "extend-context"
HELP = "two-phase YaRN context extension + passkey-retrieval check"
ACCEPTS_OVERRIDES = True


def add_arguments(p) -> None:
    from r1lab.config_cli import describe
    from r1lab.train.context import ExtendContextConfig

    p.add_argument("--config", help="JSON file with ExtendContextConfig fields (command-line overrides win)")
    p.epilog = "config fields (--key value):\n" + describe(ExtendContextConfig)


def main(args) -> int:
    from r1lab.config_cli import load_config
    from r1lab.train.context import ExtendContextConfig, run_extend_context

    cfg = load_config(ExtendContextConfig, args.config, args.overrides)
    try:
        report = run_extend_context(cfg)
    except ValueError as err:
        print(f"error: {err}")
        return 1
    print(f"extended model → {report['model_dir']} (rope {report['rope_parameters']})")
    return 0
