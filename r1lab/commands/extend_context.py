"""Extend a pretrained model's context with YaRN in phases (DeepSeek-V3 §4.3, scaled down), then probe passkey
retrieval at every length for the base and the extended model.

The original length (YaRN's original_max_position_embeddings) is --original-len, else the seq_len the base model was
trained at (read from the pretraining run beside --model-dir: <run>/checkpoints/step-*/train_config.json), else the
model's max_position_embeddings. The phases default to 2× and 4× that length: a cpu-demo model pretrained at 256
tokens is extended in two phases at 512 and 1024 tokens (YaRN factor 4). Each phase is a pretrain run in
<out_dir>/phase-K/; the extended model is the last phase's, <out_dir>/phase-N/model (printed at the end and recorded as
model_dir in <out_dir>/summary.json). --resume continues an interrupted extension; without it an --out-dir that
already holds one is refused. List fields take a JSON list or comma-separated items: --phases [512,1024] or
--phases 512,1024 (also --steps, --micro-batch, --corpus).

Examples:
  r1lab extend-context --model-dir runs/demo/model --out-dir runs/extend        # cpu-demo: 256 → 512 → 1024 tokens
  r1lab extend-context --model-dir runs/demo/model --phases [384,512] --steps [200,400] --out-dir runs/extend-512
  r1lab extend-context --model-dir RUN/pretrain/model --phases [1024,2048] --steps [500,500] --micro-batch [16,8]
  r1lab extend-context --model-dir runs/demo/model --out-dir runs/extend --resume  # continue after an interruption
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
    report = run_extend_context(cfg)  # bad input is a ValueError: r1lab.cli prints it as one line on stderr
    print(f"extended model → {report['model_dir']} (rope {report['rope_parameters']})")
    return 0
