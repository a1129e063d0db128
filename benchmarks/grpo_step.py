"""Seconds per GRPO step: r1lab's ``run_grpo`` vs TRL's ``GRPOTrainer`` on the same small Qwen2 built from a config.

Setup (from /work/shared/notes/r1_training.md, "Peer baseline"): a Qwen2 shaped like Qwen2.5-0.5B (hidden 896,
24 layers, 14 heads, 2 KV heads, random weights, 2,000-token vocabulary), 4 prompts × G = 8 = 32 completions per step,
256 new tokens, β = 0.04 with a reference model, bf16 on CUDA. Reported: median seconds per step over steps 2..N
(step 1 includes warm-up), mean generated tokens, and ours/TRL ratio — printed as one JSON line. Both sides score
completions with the same reward (``length_reward``: it varies inside every group, so no step skips its update).
``--arch deepseek`` runs the same comparison on a DeepSeek-V3 checkpoint (benchmarks/train_step.py's peer shape) that
r1lab writes and transformers' DeepseekV3ForCausalLM loads; our engine then decodes with MLA + CUDA graphs.

  python benchmarks/grpo_step.py                # GPU run (the notes' setup)
  python benchmarks/grpo_step.py --arch deepseek
  python benchmarks/grpo_step.py --smoke        # tiny CPU smoke run (2 layers, 16 new tokens, 3 steps)

TRL is optional: if ``trl`` (and ``datasets``) cannot be imported, the JSON line says the peer is missing. Every TRL
call is guarded; a TRL API change is reported as an error string rather than a crash.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import traceback
from pathlib import Path

import torch


def length_reward(text: str, problem=None) -> float:
    """The reward both sides use (a user reward for ours, a reward_funcs entry for TRL): it varies inside every
    group, so neither side can skip the update of a step, as both would with an all-zero accuracy reward.

    >>> length_reward("abcdefgh")
    0.14285714285714285
    """
    return float(len(text) % 7) / 7


def build_assets(root: Path, smoke: bool, arch: str) -> tuple[str, str, list[str]]:
    """(tokenizer dir, model dir, prompts): our BPE trained on the built-in corpus and a random model — a Qwen2 (as
    the notes), or a DeepSeek-V3 checkpoint saved by r1lab that transformers also loads (``--arch deepseek``)."""
    # benchmarks/ is on sys.path when this file runs as a script
    from train_step import PEER
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from r1lab.data.corpus import render
    from r1lab.data.templates import R1_ZERO_TEMPLATE, r1_zero_prompt
    from r1lab.data.tokenizer import load_tokenizer, train_tokenizer
    from r1lab.model import DeepSeekV3Config, DeepSeekV3ForCausalLM
    from r1lab.tasks import make_split

    problems = make_split("train", 200, families=["arithmetic", "word", "countdown"])
    tok_dir, model_dir = root / "tok", root / "model"
    train_tokenizer([render(p, k) for p in problems for k in ("worked", "r1zero")] + [R1_ZERO_TEMPLATE], 2000, tok_dir)
    tok = load_tokenizer(tok_dir)
    shape = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2) if smoke else \
        dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
             num_key_value_heads=2)
    vocab = max(2000, tok.vocab_size)
    torch.manual_seed(0)
    if arch == "deepseek":  # the peer baseline of benchmarks/train_step.py (195M active, 1.2B total), MTP kept
        tiny = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
                "q_lora_rank": 32, "kv_lora_rank": 32, "qk_nope_head_dim": 16, "qk_rope_head_dim": 16,
                "v_head_dim": 16, "n_routed_experts": 8, "num_experts_per_tok": 2, "n_group": 2, "topk_group": 1,
                "moe_intermediate_size": 32, "first_k_dense_replace": 1}
        ds = tiny if smoke else {k: v for k, v in PEER.items() if k not in ("vocab_size", "max_position_embeddings")}
        cfg = DeepSeekV3Config(vocab_size=vocab, max_position_embeddings=2048, bos_token_id=tok.bos_id,
                               eos_token_id=tok.eos_id, pad_token_id=tok.pad_id, **ds)
        DeepSeekV3ForCausalLM(cfg).save_pretrained(model_dir)
    else:
        cfg = Qwen2Config(vocab_size=vocab, max_position_embeddings=2048, tie_word_embeddings=True,
                          bos_token_id=tok.bos_id, eos_token_id=tok.eos_id, pad_token_id=tok.pad_id, **shape)
        Qwen2ForCausalLM(cfg).save_pretrained(model_dir)
    tok.save(model_dir)
    return str(tok_dir), str(model_dir), [r1_zero_prompt(p.prompt) for p in problems[:64]]


def run_ours(tok_dir: str, model_dir: str, root: Path, a) -> dict:
    from r1lab.rl.grpo import GRPOConfig, run_grpo
    from r1lab.train.metrics import read_metrics

    cfg = GRPOConfig(model=model_dir, tokenizer=tok_dir, out_dir=str(root / "ours"), steps=a.steps,
                     prompts_per_step=a.prompts, group_size=a.group, max_new_tokens=a.new_tokens, beta=a.beta,
                     eval_every=0, log_samples=0, lr=1e-6, aggregation="token_mean", micro_batch=a.micro_batch,
                     families=["arithmetic", "word", "countdown"], n_train_per_family=64,
                     reward_weights={"accuracy": 0.0, "format": 0.0, "grpo_step.length_reward": 1.0},
                     compile_sampler=not a.no_compile,
                     # bf16 weights like the peer's model below (our default on CUDA is fp32 master weights + autocast)
                     dtype="bf16" if torch.cuda.is_available() else "fp32")
    run_grpo(cfg)
    rows = [r for r in read_metrics(root / "ours" / "metrics.jsonl") if "step_s" in r]
    times = [r["step_s"] for r in rows]
    return {"s_per_step": statistics.median(times[1:] or times), "first_step_s": times[0],
            "mean_completion_tokens": statistics.mean(r["response_len_mean"] for r in rows),
            "generate_frac": statistics.mean(r["generate_s"] / r["step_s"] for r in rows[1:] or rows)}


def prompt_dataset(prompts: list[str]):
    """A ``datasets.Dataset`` of {"prompt"} rows, built from an Arrow table with a fixed fingerprint (skips the
    pickling-based fingerprint that breaks on some pyarrow/dill combinations)."""
    import pyarrow as pa
    from datasets import Dataset

    return Dataset(pa.table({"prompt": prompts}), fingerprint="r1lab-grpo-bench")


def run_trl(tok_dir: str, model_dir: str, prompts: list[str], root: Path, a) -> dict:
    try:
        import trl
        from transformers import AutoModelForCausalLM, TrainerCallback
        from trl import GRPOConfig as TRLConfig
        from trl import GRPOTrainer
    except Exception as err:  # noqa: BLE001
        return {"missing": f"{type(err).__name__}: {err}"}
    from r1lab.data.tokenizer import load_tokenizer

    class Timer(TrainerCallback):
        def __init__(self):
            self.t, self.times = None, []

        def on_step_begin(self, args, state, control, **kw):
            self.t = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            self.times.append(time.perf_counter() - self.t)

    lengths: list[int] = []

    def reward(prompts, completions, completion_ids=None, **kw):
        if completion_ids is not None:
            lengths.extend(len(c) for c in completion_ids)
        return [length_reward(c) for c in completions]

    try:
        tok = load_tokenizer(tok_dir).hf
        tok.padding_side = "left"
        bf16 = torch.cuda.is_available()
        args = TRLConfig(output_dir=str(root / "trl"), per_device_train_batch_size=a.prompts * a.group,
                         num_generations=a.group, max_completion_length=a.new_tokens, beta=a.beta,
                         learning_rate=1e-6, max_steps=a.steps, logging_steps=1, save_strategy="no",
                         report_to=[], bf16=bf16, use_cpu=not torch.cuda.is_available(), seed=0)
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.bfloat16 if bf16 else torch.float32)
        timer = Timer()
        trainer = GRPOTrainer(model=model, reward_funcs=[reward], args=args,
                              train_dataset=prompt_dataset(prompts), processing_class=tok,
                              callbacks=[timer])
        trainer.train()
    except Exception as err:  # noqa: BLE001
        return {"error": f"{type(err).__name__}: {err}", "trace": traceback.format_exc(limit=3)[-800:]}
    times = timer.times
    return {"s_per_step": statistics.median(times[1:] or times), "first_step_s": times[0],
            "mean_completion_tokens": statistics.mean(lengths) if lengths else None, "version": trl.__version__}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--smoke", action="store_true", help="tiny model and lengths (CPU smoke test)")
    p.add_argument("--steps", type=int, default=None, help="GRPO steps per side (default 6; smoke 3)")
    p.add_argument("--prompts", type=int, default=4)
    p.add_argument("--group", type=int, default=8)
    p.add_argument("--new-tokens", type=int, default=None, help="max new tokens (default 256; smoke 16)")
    p.add_argument("--beta", type=float, default=0.04)
    p.add_argument("--micro-batch", type=int, default=32)
    p.add_argument("--skip-trl", action="store_true")
    p.add_argument("--arch", choices=["qwen2", "deepseek"], default="qwen2",
                   help="qwen2 (the notes' setup; our engine's dense runner) or deepseek (an r1lab DeepSeek-V3 "
                        "checkpoint that transformers also loads; our engine's MLA/MoE path)")
    p.add_argument("--no-compile", action="store_true", help="eager decode in our engine (no CUDA graphs)")
    a = p.parse_args(argv)
    a.steps = a.steps or (3 if a.smoke else 6)
    a.new_tokens = a.new_tokens or (16 if a.smoke else 256)
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        tok_dir, model_dir, prompts = build_assets(root, a.smoke, a.arch)
        ours = run_ours(tok_dir, model_dir, root, a)
        peer = {"missing": "skipped (--skip-trl)"} if a.skip_trl else run_trl(tok_dir, model_dir, prompts, root, a)
    line = {"bench": "grpo_step", "device": device, "arch": a.arch, "compile": not a.no_compile, "smoke": a.smoke,
            "prompts": a.prompts, "G": a.group,
            "max_new_tokens": a.new_tokens, "beta": a.beta, "ours": ours, "trl": peer}
    if "s_per_step" in peer:
        line["ratio_trl_over_ours"] = peer["s_per_step"] / ours["s_per_step"]
    else:
        line["peer"] = "missing" if "missing" in peer else "failed"
    print(json.dumps(line, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
