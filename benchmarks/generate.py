"""Generation throughput: r1lab's engine vs transformers ``generate`` on the same weights, in the same run.

Measures tokens/s (prefill included, as ``generate`` includes it) at batch 1, 32 and 256 with 128-token random prompts
and 128 new tokens, sampling at temperature 1 (no top-k / top-p, EOS ignored so every row makes all its tokens), then
MTP speculative decoding at batch 1 with its acceptance rate. Prints one JSON line per measurement with the ratio to
the peer. Default model: the "peer baseline" of docs (hidden 1024, 12 layers, 16 heads, q_lora 384, kv_lora 256, qk
64+32, v 64, 64 routed experts top-6 in 8 groups with 4 kept, 1 shared, moe_inter 512, first layer dense with inter
2048, vocab 32000: 1.23B parameters) with random weights, bf16 on CUDA.

HBM-bandwidth bound (decode only): a decode step must read, at least once, every weight it uses — the dense part plus
the routed experts that at least one of the B tokens selects (expected distinct experts per layer with uniform routing:
E·(1 − (1 − K/E)^B)) — and the latent KV cache of every row (B × mean context × latent bytes per token over all
layers). bound tokens/s = B / (bytes per step / peak bandwidth); the peak is the device's nominal HBM bandwidth
(H100 SXM 3.35 TB/s, H200 4.8 TB/s) or, with ``--peak-bw``, any other number. The fraction reported is measured
tokens/s over that bound (prefill time counts against us, so it is a conservative fraction).

``--preset qwen2`` measures the engine's dense runner instead: a random transformers Qwen2 of Qwen2.5-0.5B's shape
(vocabulary 32,000), our engine vs ``generate`` on the very same module; no MTP row.

``--workers N`` (CPU) splits each batch over N processes of cores ÷ N threads (``r1lab.engine.workers``).

``--model-dir`` measures a trained model of ours instead (e.g. the speedrun's R1), and ``--temperature`` / ``--top-p``
set both engines' sampling (the speedrun samples at 0.6 / 0.95; a trained model's peaked distributions are where the
engine's top-k shortlist for nucleus sampling applies, ``r1lab.engine.sampler``).

Usage:
  python benchmarks/generate.py                                # GPU, peer-baseline model
  python benchmarks/generate.py --preset qwen2 --compile       # GPU, Qwen2 on the dense runner
  python benchmarks/generate.py --device cpu --preset tiny     # smoke run on a CPU
  python benchmarks/generate.py --device cpu --model-dir runs/speedrun/r1/final --temperature 0.6 --top-p 0.95 \
      --batch-sizes 1,64 --prompt-len 48 --new-tokens 128          # the speedrun's teacher as the speedrun samples
  ... the same with --workers 2 --batch-sizes 64,256                # split over 2 processes (r1lab/engine/workers.py)
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from r1lab.engine import LLM, SamplingParams
from r1lab.engine.workers import MIN_SEQUENCES
from r1lab.model import DeepSeekV3Config, DeepSeekV3ForCausalLM, model_stats

PEER_BASELINE = {"vocab_size": 32000, "hidden_size": 1024, "num_hidden_layers": 12, "num_attention_heads": 16, "q_lora_rank": 384,
                     "kv_lora_rank": 256, "qk_nope_head_dim": 64, "qk_rope_head_dim": 32, "v_head_dim": 64, "n_routed_experts": 64,
                     "num_experts_per_tok": 6, "n_group": 8, "topk_group": 4, "n_shared_experts": 1, "moe_intermediate_size": 512,
                     "first_k_dense_replace": 1, "intermediate_size": 2048, "num_nextn_predict_layers": 1,
                     "max_position_embeddings": 4096, "rope_parameters": {"rope_type": "default"}}
NOMINAL_BW = {"H100": 3.35e12, "H200": 4.8e12, "A100": 2.0e12}


QWEN2 = {"qwen2": {"hidden_size": 896, "intermediate_size": 4864, "num_hidden_layers": 24, "num_attention_heads": 14,
                   "num_key_value_heads": 2},  # Qwen2.5-0.5B's shape (vocabulary 32,000 here)
         "qwen2-tiny": {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
                        "num_key_value_heads": 2}}


def build_qwen2(preset: str):
    """A random Qwen2 (transformers) for the dense-runner comparison: our engine vs generate on the same module."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    return Qwen2ForCausalLM(Qwen2Config(vocab_size=32000, max_position_embeddings=4096, tie_word_embeddings=True,
                                        **QWEN2[preset]))


def dense_bytes_per_step(model, batch: int, context: float, elem: int) -> float:
    """Every weight once (the embedding is a row lookup, so only the head's copy counts when tied) plus the K/V
    cache of every row."""
    cfg = model.config
    weights = sum(p.numel() for p in model.parameters())
    if not cfg.tie_word_embeddings:
        weights -= model.model.embed_tokens.weight.numel()
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    kv = batch * context * cfg.num_hidden_layers * 2 * cfg.num_key_value_heads * head_dim
    return (weights + kv) * elem


def build_config(preset: str) -> DeepSeekV3Config:
    if preset == "peer":
        return DeepSeekV3Config(**PEER_BASELINE)
    return DeepSeekV3Config.from_preset(preset).replace(max_position_embeddings=4096)


def peak_bandwidth(device: torch.device, override: float | None) -> float | None:
    if override:
        return override
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((bw for key, bw in NOMINAL_BW.items() if key in name), None)


def bytes_per_step(cfg: DeepSeekV3Config, batch: int, context: float, elem: int) -> float:
    """Weights read by one decode step (dense + distinct routed experts) plus the latent KV cache read."""
    stats = model_stats(cfg.replace(num_nextn_predict_layers=0), seq_len=int(context))
    e, k = cfg.n_routed_experts, cfg.num_experts_per_tok
    n_moe = sum(cfg.is_moe_layer(i) for i in range(cfg.num_hidden_layers))
    per_expert = 3 * cfg.hidden_size * cfg.moe_intermediate_size
    distinct = e * (1 - (1 - k / e) ** batch) if e else 0
    active_dense = stats.active_params - n_moe * k * per_expert  # everything but the routed experts
    weights = (active_dense + n_moe * distinct * per_expert) * elem
    kv = batch * context * stats.kv_bytes_per_token_latent * elem / 2  # model_stats counts 2-byte elements
    return weights + kv


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_ours(llm: LLM, prompts, new_tokens: int, temperature: float = 1.0, top_p: float = 1.0) -> float:
    sp = SamplingParams(temperature=temperature, top_p=top_p, max_tokens=new_tokens, stop_token_ids=[], seed=None)
    if llm.compile:  # record every CUDA graph the timed run needs (one per batch bucket and key-length bucket)
        llm.generate(prompt_token_ids=prompts, sampling_params=sp)
    elif llm._parallel_ok([SamplingParams(n=MIN_SEQUENCES)] * len(prompts)):  # helpers up, replica built
        llm.generate(prompt_token_ids=[p[:8] for p in prompts], sampling_params=SamplingParams(n=MIN_SEQUENCES,
                                                                                                max_tokens=4))
    else:
        llm.generate(prompt_token_ids=[p[:8] for p in prompts[:2]], sampling_params=SamplingParams(max_tokens=4))
    sync(llm.device)
    t0 = time.perf_counter()
    outs = llm.generate(prompt_token_ids=prompts, sampling_params=sp)
    sync(llm.device)
    dt = time.perf_counter() - t0
    assert all(len(o.outputs[0].token_ids) == new_tokens for o in outs)
    return len(prompts) * new_tokens / dt


def time_hf(hf_model, prompts, new_tokens: int, device, temperature: float = 1.0, top_p: float = 1.0) -> float:
    ids = torch.tensor(prompts, device=device)
    mask = torch.ones_like(ids)
    kw = {"do_sample": True, "temperature": temperature, "top_k": 0, "top_p": top_p, "max_new_tokens": new_tokens,
              "min_new_tokens": new_tokens, "pad_token_id": 0}
    with torch.no_grad():
        hf_model.generate(ids[:2, :8], attention_mask=mask[:2, :8], **{**kw, "max_new_tokens": 4, "min_new_tokens": 4})
        sync(device)
        t0 = time.perf_counter()
        out = hf_model.generate(ids, attention_mask=mask, **kw)
        sync(device)
    dt = time.perf_counter() - t0
    assert out.shape[1] == ids.shape[1] + new_tokens
    return len(prompts) * new_tokens / dt


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--preset", default="peer",
                    help="peer (default), a preset name (e.g. tiny), or qwen2 / qwen2-tiny: a transformers Qwen2 on "
                         "the engine's dense runner")
    ap.add_argument("--batch-sizes", default="1,32,256")
    ap.add_argument("--prompt-len", type=int, default=128)
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--compile", action="store_true", help="torch.compile the decode step (CUDA graphs)")
    ap.add_argument("--skip-peer", action="store_true", help="do not run transformers generate")
    ap.add_argument("--peak-bw", type=float, default=None, help="peak memory bandwidth in bytes/s")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--model-dir", default=None,
                    help="a trained model of ours (e.g. runs/speedrun/r1/final) instead of random weights; --preset "
                         "is then ignored")
    ap.add_argument("--temperature", type=float, default=1.0)
    ap.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling in both engines (the speedrun: 0.95)")
    ap.add_argument("--dense-experts-max", type=int, default=0,
                    help="decode steps of at most N tokens (with N·K > E) run every expert densely instead of the "
                         "grouped path (experiment; see r1lab.engine.runner.ffn_decode)")
    ap.add_argument("--workers", default="1",
                    help="CPU: processes sharing each batch (r1lab/engine/workers.py; 'auto' = one per core); the "
                         "peer runs in this process with torch's threads")
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    dense = args.preset in QWEN2 and not args.model_dir
    torch.manual_seed(args.seed)
    if args.model_dir:
        model = DeepSeekV3ForCausalLM.from_pretrained(args.model_dir, dtype=dtype, device=str(device)).eval()
        cfg = model.config
    else:
        cfg = None if dense else build_config(args.preset)
        model = (build_qwen2(args.preset) if dense else DeepSeekV3ForCausalLM(cfg)).to(device=device,
                                                                                       dtype=dtype).eval()
    vocab = model.config.vocab_size
    batches = [int(b) for b in args.batch_sizes.split(",")]
    gen = torch.Generator().manual_seed(args.seed)
    prompts_all = torch.randint(2, vocab, (max(batches), args.prompt_len), generator=gen).tolist()
    hf_model = None
    if dense and not args.skip_peer:
        hf_model = model  # transformers' generate on the very module our engine runs
    elif not args.skip_peer:
        import transformers
        from transformers import AutoModelForCausalLM
        transformers.logging.set_verbosity_error()  # ours also stores the MTP layer, which transformers drops
        with tempfile.TemporaryDirectory() as tmp:
            model.save_pretrained(tmp)
            hf_model = AutoModelForCausalLM.from_pretrained(tmp, dtype=dtype).to(device).eval()
    llm = LLM(model, max_batch_size=max(batches), max_model_len=args.prompt_len + args.new_tokens + 8,
              device=device, compile=args.compile, seed=args.seed, workers=args.workers)
    if args.dense_experts_max and not dense:
        llm._runner.dense_experts_max = args.dense_experts_max
    bw = peak_bandwidth(device, args.peak_bw)
    elem = torch.finfo(dtype).bits // 8
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    base = {"bench": "generate", "device": name, "dtype": str(dtype).replace("torch.", ""),
            "preset": None if args.model_dir else args.preset,
            "model_dir": args.model_dir, "temperature": args.temperature, "top_p": args.top_p,
            "prompt_len": args.prompt_len, "new_tokens": args.new_tokens, "compile": args.compile,
            "dense_experts_max": args.dense_experts_max, "workers": llm.workers, "threads": torch.get_num_threads()}
    for b in batches:
        prompts = prompts_all[:b]
        ours = time_ours(llm, prompts, args.new_tokens, args.temperature, args.top_p)
        row = {**base, "batch": b, "tokens_per_s": round(ours, 1)}
        if hf_model is not None:
            peer = time_hf(hf_model, prompts, args.new_tokens, device, args.temperature, args.top_p)
            row.update(peer="transformers.generate", peer_tokens_per_s=round(peer, 1), ratio=round(ours / peer, 2))
        if bw:
            context = args.prompt_len + args.new_tokens / 2
            step_bytes = dense_bytes_per_step(model, b, context, elem) if dense else \
                bytes_per_step(cfg, b, context, elem)
            bound = b * bw / step_bytes
            row.update(peak_bw=bw, bytes_per_step=int(step_bytes), bound_tokens_per_s=round(bound, 1),
                       fraction_of_bound=round(ours / bound, 3))
        print(json.dumps(row), flush=True)
    if dense:  # no MTP modules: no speculative decoding
        return 0
    spec = LLM(model, speculative_mtp=True, max_batch_size=1, max_model_len=args.prompt_len + args.new_tokens + 8,
               device=device, compile=args.compile, seed=args.seed)
    plain = time_ours(llm, prompts_all[:1], args.new_tokens)
    fast = time_ours(spec, prompts_all[:1], args.new_tokens)
    print(json.dumps({**base, "batch": 1, "mode": "mtp_speculative", "tokens_per_s": round(fast, 1),
                      "plain_tokens_per_s": round(plain, 1), "ratio": round(fast / plain, 2),
                      "acceptance_rate": spec.stats.acceptance_rate,
                      "mean_accepted_length": spec.stats.mean_accepted_length,
                      "note": "random weights: p and q are both near uniform, so acceptance says little; "
                              "the speed shows the draft + verify overhead"}),
          flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
