"""Pretrain a DeepSeek-V3-architecture model (the V3-Base stage): next-token + MTP + balance loss, bias balancing,
packed documents, atomic checkpoints and exact --resume. Multi-process: ``torchrun --nproc-per-node N -m r1lab
pretrain ...`` (DDP or FSDP2, gloo on CPU / nccl on GPU).

Examples:
  r1lab pretrain --preset cpu-demo --out-dir runs/demo          # built-in corpus, 800 steps: 6-10 min on 2 CPU cores
  r1lab pretrain --preset tiny --steps 20 --exact-match 0
  r1lab pretrain --out-dir runs/demo --resume                   # continue the latest checkpoint
  r1lab pretrain --corpus a.jsonl,b.txt --tokenizer tok/ --lr 1e-3 --schedule wsd --out-dir runs/mine

List fields take a JSON list or comma-separated items: --corpus '["a.jsonl","b.txt"]', --corpus a.jsonl,b.txt, or one
file --corpus a.jsonl (not space-separated: --corpus a.jsonl b.txt is an error). A fresh run refuses an --out-dir that
already holds a run's checkpoints or metrics.jsonl: pass --resume to continue it, or choose another --out-dir.
"""

from __future__ import annotations

NAME = "pretrain"
HELP = "pretrain a model (V3-Base stage) on the built-in or a user corpus"
ACCEPTS_OVERRIDES = True


def add_arguments(p) -> None:
    from r1lab.config_cli import describe
    from r1lab.train.pretrain import PretrainConfig

    p.add_argument("--config", help="JSON file with PretrainConfig fields (command-line overrides win)")
    p.epilog = "config fields (--key value):\n" + describe(PretrainConfig)


def main(args) -> int:
    from r1lab.config_cli import load_config
    from r1lab.train.distributed import destroy_distributed
    from r1lab.train.pretrain import PretrainConfig, run_pretrain

    cfg = load_config(PretrainConfig, args.config, args.overrides)
    try:
        run_pretrain(cfg)  # bad corpus (file:line), a mismatched resume, a used --out-dir: ValueErrors, one line
    except BaseException:  # (printed by r1lab.cli on stderr, exit 2) after leaving the process group
        destroy_distributed()
        raise
    destroy_distributed(sync=True)
    return 0
