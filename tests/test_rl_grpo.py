"""End-to-end GRPO on the tiny preset (CPU, naive sampler): metrics fields, raising rewards, resume, CLI."""

import json

import pytest

from r1lab.rl.grpo import GRPOConfig, run_grpo

REQUIRED = {"step", "reward", "reward_accuracy", "reward_format", "accuracy", "response_len_mean",
            "response_len_max", "kl", "clip_fraction", "entropy", "zero_var_frac", "reflection_rate", "tok_s",
            "generate_s", "train_s", "loss", "grad_norm", "reward_errors", "truncated_frac", "lr", "mixing"}


def length_reward(completion, problem):
    """User reward used through its dotted path: longer text scores higher (varies within a group)."""
    return len(completion) / 100.0


def raising_reward(completion, problem):
    raise RuntimeError("broken checker")


def _cfg(tokenizer_dir, out, **kw):
    base = dict(tokenizer=tokenizer_dir, preset="tiny", out_dir=str(out), steps=2, prompts_per_step=2,
                group_size=2, max_new_tokens=6, eval_every=2, eval_n_per_family=1, eval_samples=1, sampler="naive",
                template="r1-zero-short",  # the exact R1-Zero template's ~300-token prompts exceed tiny's context
                families=["arithmetic", "word"], n_train_per_family=8, micro_batch=4,
                reward_weights={"accuracy": 1.0, "format": 0.2, "test_rl_grpo:length_reward": 0.5,
                                "test_rl_grpo.raising_reward": 0.5})
    return GRPOConfig(**{**base, **kw})


def test_end_to_end_metrics_and_raising_reward(tokenizer_dir, tmp_path):
    summary = run_grpo(_cfg(tokenizer_dir, tmp_path, beta=0.04, inner_updates=2))
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if "reward" in r]
    assert [r["step"] for r in steps] == [1, 2] and summary["steps_done"] == 2
    for r in steps:
        assert REQUIRED <= set(r), REQUIRED - set(r)
        assert r["reward_errors"] == 4  # the raising reward failed on all 2×2 samples; the run went on
        assert r["kl"] >= 0 and 0 <= r["clip_fraction"] <= 1 and r["entropy"] > 0
    assert "eval_pass@1" in rows[0] and "eval_pass@1" in steps[-1]
    assert steps[0]["reward_test_rl_grpo:length_reward"] > 0  # user reward by dotted path was computed
    samples = [json.loads(line) for line in (tmp_path / "samples.jsonl").read_text().splitlines()]
    assert samples and {"prompt", "completion", "reward", "gold"} <= set(samples[0])
    assert (tmp_path / "final" / "model.safetensors").is_file()
    assert (tmp_path / "checkpoints" / "step-000002" / "training_state.pt").is_file()


def test_resume_continues_from_checkpoint(tokenizer_dir, tmp_path):
    run_grpo(_cfg(tokenizer_dir, tmp_path, steps=1, eval_every=0))
    summary = run_grpo(_cfg(tokenizer_dir, tmp_path, steps=2, eval_every=0, resume=True))
    steps = [json.loads(x)["step"] for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2] and summary["steps_done"] == 2
    with pytest.raises(ValueError, match="lr"):
        run_grpo(_cfg(tokenizer_dir, tmp_path, steps=3, eval_every=0, resume=True, lr=1.0))


def test_config_errors(tokenizer_dir, tmp_path):
    with pytest.raises(ValueError, match="group_size"):
        run_grpo(_cfg(tokenizer_dir, tmp_path, group_size=1))
    with pytest.raises(ValueError, match="aggregation"):
        run_grpo(_cfg(tokenizer_dir, tmp_path, aggregation="sum"))
    with pytest.raises(ValueError, match=r"longest prompt \(r1-zero template\) has \d+ tokens; the model's context"):
        run_grpo(_cfg(tokenizer_dir, tmp_path, template="r1-zero"))  # tiny's context is 128 tokens


def test_cli_help_lists_every_field(capsys):
    from r1lab.cli import main

    with pytest.raises(SystemExit):
        main(["grpo", "--help"])
    text = capsys.readouterr().out
    for name in ("--prompts-per-step", "--group-size", "--inner-updates", "--beta", "--ref-reset-every",
                 "--aggregation", "--drop-zero-variance", "--mask-truncated", "--reward-weights"):
        assert name in text


def test_amp_keeps_fp32_master_weights_and_a_bf16_sampler_copy(tokenizer_dir, tmp_path, monkeypatch):
    """dtype="amp" (what "auto" means on CUDA), run here on CPU: the trained weights stay fp32, the sampler's copy is
    bf16 and follows every update; the engine samples from it."""
    import torch

    from r1lab.model import DeepSeekV3Config, DeepSeekV3ForCausalLM
    from r1lab.rl.grpo import refresh_sampler_copy, sampler_copy
    from r1lab.train.models import resolve_precision

    model = DeepSeekV3ForCausalLM(DeepSeekV3Config.from_preset("tiny"))
    amp = resolve_precision("amp", torch.device("cpu"))
    copy = sampler_copy(model, amp)
    assert copy is not model and copy.lm_head.weight.dtype == torch.bfloat16
    assert copy.model.layers[1].mlp.gate.e_score_correction_bias.dtype == torch.float32  # kept fp32
    assert sampler_copy(model, resolve_precision("fp32", torch.device("cpu"))) is model
    address = copy.lm_head.weight.data_ptr()
    with torch.no_grad():
        model.lm_head.weight.add_(0.5)
    refresh_sampler_copy(copy, model)
    assert copy.lm_head.weight.data_ptr() == address  # in place: captured CUDA graphs stay valid
    assert torch.equal(copy.lm_head.weight, model.lm_head.weight.to(torch.bfloat16))

    assert copy.model.layers[1].mlp.gate.weight.dtype == torch.float32  # routes like the fp32 trainer

    import r1lab.rl.grpo as grpo_module

    seen, real = [], grpo_module.refresh_sampler_copy

    def spy(copy, trained):
        real(copy, trained)
        seen.append((copy, trained))

    monkeypatch.setattr(grpo_module, "refresh_sampler_copy", spy)
    summary = run_grpo(_cfg(tokenizer_dir, tmp_path, dtype="amp", sampler="engine"))
    assert summary["steps_done"] == 2 and len(seen) == 2  # refreshed after every update
    sampled, trained = seen[-1]
    assert sampled is not trained and trained.lm_head.weight.dtype == torch.float32
    assert torch.equal(sampled.lm_head.weight, trained.lm_head.weight.to(torch.bfloat16))
    from safetensors import safe_open

    with safe_open(str(tmp_path / "final" / "model.safetensors"), "pt") as f:
        assert f.get_tensor("lm_head.weight").dtype == torch.float32


def test_sampler_copy_of_an_hf_model_keeps_fp32_buffers():
    """Only parameters go to bf16: transformers keeps RoPE's inv_freq in fp32, and a bf16 one is radians off at long
    positions."""
    import torch
    import transformers

    from r1lab.rl.grpo import sampler_copy
    from r1lab.train.models import resolve_precision

    cfg = transformers.Qwen2Config(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                   num_attention_heads=2, num_key_value_heads=1)
    model = transformers.Qwen2ForCausalLM(cfg)
    copy = sampler_copy(model, resolve_precision("amp", torch.device("cpu")))
    assert copy.model.embed_tokens.weight.dtype == torch.bfloat16
    assert copy.model.rotary_emb.inv_freq.dtype == torch.float32
    assert model.model.embed_tokens.weight.dtype == torch.float32  # the trained model is untouched


def test_logged_accuracy_counts_fully_correct_samples_only():
    """Countdown's 0.1 for a well-formed wrong answer and code's partial pass fractions are not "accuracy"; the
    accuracy reward's mean stays logged as reward_accuracy."""
    import torch

    from r1lab.rl.advantage import group_advantages
    from r1lab.rl.grpo import rollout_metrics
    from r1lab.rl.rollout import RolloutBatch

    acc = torch.tensor([1.0, 0.1, 0.5, 0.0])
    rewards_NK = torch.stack([acc, torch.ones(4)], dim=1)
    batch = RolloutBatch(
        input_ids_NS=torch.zeros(4, 3, dtype=torch.long), attention_mask_NS=torch.ones(4, 3, dtype=torch.long),
        completion_mask_NT=torch.ones(4, 2), old_logp_NT=torch.zeros(4, 2), rewards_NK=rewards_NK,
        reward_names=["accuracy", "format_r1_zero"], rewards_N=rewards_NK.sum(1), group_ids_N=torch.tensor([0, 0, 1, 1]),
        truncated_N=torch.zeros(4, dtype=torch.bool), group_size=2, texts=["a", "b", "c", "d"], problems=[None] * 4)
    m = rollout_metrics(batch, group_advantages(batch.rewards_N, 2), {"accuracy": 1.0, "format_r1_zero": 1.0})
    assert m["accuracy"] == 0.25
    assert abs(m["reward_accuracy"] - 0.4) < 1e-6
