"""Rewrite a DeepSeek-V3-architecture checkpoint: into DeepSeek's FP8 format, into another dtype, or resharded.

--fp8 writes what DeepSeek-V3's release holds: every linear layer's weight (attention projections, dense and expert
FFNs; not embeddings, the output head, norms or the router) as float8_e4m3fn with a `weight_scale_inv` fp32
multiplier per 128×128 block, the other tensors in --dtype, and `quantization_config` in config.json. Without --fp8 an
FP8 checkpoint is dequantised (into --dtype, or the dtype of its unquantised tensors). The tokenizer and generation
files next to the weights are copied along. The output folder is written whole and then moved into place, so a
killed conversion leaves nothing half-written.

Examples:
  r1lab convert runs/speedrun/r1/final runs/r1-fp8 --fp8
  r1lab convert path/to/deepseek-fp8-checkpoint runs/bf16 --dtype bfloat16
  r1lab convert runs/big runs/big-sharded --max-shard-size 2GB
"""

from __future__ import annotations

NAME = "convert"
HELP = "rewrite a checkpoint in DeepSeek's FP8 format (e4m3 + 128×128 block scales), another dtype, or shards"

import shutil
from pathlib import Path

DTYPES = ("keep", "bfloat16", "float16", "float32")
# files beside the weights that a converted folder must keep to stay usable by `r1lab generate/eval` and transformers
SIDE_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja",
              "generation_config.json", "tokenizer.model")


def add_arguments(p) -> None:
    p.add_argument("src", help="checkpoint directory (config.json with model_type deepseek_v3 + *.safetensors)")
    p.add_argument("dst", help="output directory (must not exist, or be empty)")
    p.add_argument("--fp8", action="store_true", help="store linear weights as e4m3 with 128×128 block scales")
    p.add_argument("--dtype", choices=DTYPES, default="keep",
                   help="dtype of the tensors not in FP8 (default keep: as the source stores them)")
    p.add_argument("--max-shard-size", default="5GB", help="largest safetensors file (default 5GB)")


def main(args) -> int:
    import torch

    from ..model import DeepSeekV3ForCausalLM

    src, dst = Path(args.src), Path(args.dst)
    if not src.is_dir():
        raise ValueError(f"{src}: no such checkpoint directory")
    if dst.exists() and (not dst.is_dir() or any(dst.iterdir())):
        raise ValueError(f"{dst} exists and is not an empty directory; choose a new output folder")
    dtype = None if args.dtype == "keep" else getattr(torch, args.dtype)
    model = DeepSeekV3ForCausalLM.from_pretrained(src, dtype=dtype)  # bad checkpoints: one clear line (cli.main)
    tmp = dst.with_name(dst.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, fp8=args.fp8, dtype=dtype, max_shard_size=args.max_shard_size)
    copied = [name for name in SIDE_FILES if (src / name).is_file()]
    for name in copied:
        shutil.copy2(src / name, tmp / name)
    if dst.exists():
        dst.rmdir()
    tmp.rename(dst)
    size = sum(f.stat().st_size for f in dst.glob("*.safetensors"))
    what = "FP8 (e4m3, 128×128 block scales)" if args.fp8 else f"dtype {args.dtype}"
    print(f"wrote {dst}: {what}, {size / 2**20:.1f} MiB of safetensors"
          + (f"; copied {', '.join(copied)}" if copied else ""))
    return 0
