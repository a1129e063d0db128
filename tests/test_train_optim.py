"""Schedules (warmup / cosine / WSD), the γ schedule, AdamW parameter groups, MFU, metrics logging, loss weights."""

from __future__ import annotations

import itertools
import sys
from pathlib import Path

import pytest
import torch

from r1lab.train.loop import config_diff, count_pairs, loss_weight
from r1lab.train.metrics import MetricsLogger, format_line, mfu, read_metrics
from r1lab.train.optim import gamma_at, lr_multiplier, make_optimizer, make_schedule


def test_warmup_then_cosine_values():
    f = [lr_multiplier(s, 100, "cosine", 10, 0.1) for s in range(100)]
    assert f[0] == pytest.approx(1 / 11) and f[9] == pytest.approx(10 / 11) and f[10] == 1.0
    assert all(a < b for a, b in itertools.pairwise(f[:11]))  # increasing warmup
    assert all(a >= b for a, b in itertools.pairwise(f[10:]))  # monotone decay
    assert f[99] == pytest.approx(0.1)
    mid = 10 + 89 / 2  # halfway through the cosine: (1 + 0.1) / 2
    assert lr_multiplier(int(mid), 100, "cosine", 10, 0.1) == pytest.approx(0.55, abs=0.02)


def test_wsd_values():
    f = [lr_multiplier(s, 100, "wsd", 5, 0.0, decay_frac=0.2) for s in range(100)]
    assert f[4] == pytest.approx(5 / 6) and all(x == 1.0 for x in f[5:80])
    assert f[80] == pytest.approx(1 - 1 / 20) and f[99] == pytest.approx(0.0)
    assert all(a > b for a, b in itertools.pairwise(f[80:]))


def test_bad_schedule_name():
    with pytest.raises(ValueError, match="schedule must be one of"):
        lr_multiplier(0, 10, "linear")


def test_scheduler_drives_optimizer_lr_and_resumes():
    class Cfg:
        lr, weight_decay, betas, schedule, warmup_steps, min_lr_ratio = 1e-2, 0.1, (0.9, 0.95), "cosine", 2, 0.1

    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.LayerNorm(4))
    opt = make_optimizer(model, Cfg)
    assert [g["weight_decay"] for g in opt.param_groups] == [0.1, 0.0]
    assert len(opt.param_groups[0]["params"]) == 1  # only the matrix decays
    sched = make_schedule(opt, Cfg, 10)
    seen = []
    for _ in range(5):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert seen == pytest.approx([1e-2 * lr_multiplier(s, 10, "cosine", 2, 0.1) for s in range(5)])
    sched2 = make_schedule(opt, Cfg, 10)
    sched2.load_state_dict(sched.state_dict())
    assert sched2.get_last_lr() == sched.get_last_lr()


def test_gamma_schedule_reaches_zero():
    g = [gamma_at(s, 100, 0.001, 0.1) for s in range(100)]
    assert g[:90] == [0.001] * 90 and g[90:] == [0.0] * 10
    assert gamma_at(5, 10, 0.01, 0.0) == 0.01
    with pytest.raises(ValueError):
        gamma_at(0, 10, 0.01, 1.5)


def test_bias_updates_stop_when_gamma_is_zero(tmp_path):
    """In a real run the routing biases move while γ > 0 and are frozen over the last gamma_zero_frac of steps."""
    sys.path.insert(0, str(Path(__file__).parent))
    from train_helpers import make_env, tiny_config

    from r1lab.train.pretrain import run_pretrain

    torch.set_num_threads(1)
    env = make_env(tmp_path)
    art = run_pretrain(tiny_config(env, tmp_path / "run", steps=10, gamma=0.01, gamma_zero_frac=0.3, ckpt_every=7,
                                   keep_last=5))
    rows = read_metrics(Path(art["metrics"]))
    assert [r["gamma"] for r in rows] == [0.01] * 7 + [0.0] * 3
    from safetensors.torch import load_file

    at7 = load_file(str(tmp_path / "run" / "checkpoints" / "step-000007" / "model.safetensors"))
    final = load_file(str(tmp_path / "run" / "model" / "model.safetensors"))
    biases = [k for k in final if k.endswith("e_score_correction_bias")]
    assert biases
    for k in biases:
        assert at7[k].abs().max() > 0  # moved while γ > 0 (sign rule: multiples of γ)
        torch.testing.assert_close(at7[k], final[k], rtol=0, atol=0)  # frozen after


def test_mfu_and_metrics_logger(tmp_path):
    assert mfu(1000.0, 6e9, 1e14) == pytest.approx(0.06)
    assert mfu(1000.0, 6e9, 0.0) == 0.0
    with MetricsLogger(tmp_path / "m.jsonl", echo=None) as ml:
        line = ml.log({"step": 1, "loss": 2.0, "lr": 1e-3})
        ml.log({"step": 2, "loss": 1.5, "lr": 1e-3})
    assert line == "step 1 | loss 2.0000 | lr 1.00e-03"
    (tmp_path / "m.jsonl").open("a").write('{"step": 3, "lo')  # torn last line of a killed run
    rows = read_metrics(tmp_path / "m.jsonl")
    assert [r["step"] for r in rows] == [1, 2] and "time" in rows[0]
    assert MetricsLogger(tmp_path / "x.jsonl", enabled=False).log({"step": 1}) == ""
    assert not (tmp_path / "x.jsonl").exists()
    assert format_line({"mfu": 0.5, "eta_s": 61.0}) == "mfu 50.00% | eta 1:01"


def test_loss_weights_make_global_token_mean():
    """Σ over micro-batches and ranks of w·mean_local / world == the global token mean."""
    torch.manual_seed(0)
    per_token = [torch.rand(n) for n in (3, 7, 5, 1)]  # 2 ranks × 2 micro-batches of uneven token counts
    n_global = sum(len(t) for t in per_token)
    world = 2
    total = sum(loss_weight(len(t), n_global, world) * t.mean() for t in per_token) / world
    assert float(total) == pytest.approx(float(torch.cat(per_token).mean()))


def test_count_pairs_matches_model_loss_mask():
    labels = torch.tensor([[5, 6, 7, 8, 9, 0]])
    docs = torch.tensor([[1, 1, 1, 2, 2, 0]])
    assert count_pairs(labels, docs, 1) == 3  # (0,1) (1,2) (3,4)
    assert count_pairs(labels, docs, 2) == 1  # (0,2)
    assert count_pairs(labels, None, 1) == 5


def test_config_diff_lists_every_changed_field():
    diff = config_diff({"lr": 1, "seq_len": 32, "resume": False}, {"lr": 2, "seq_len": 64, "resume": True},
                       ignore={"resume"})
    assert diff == ["lr: saved 1, now 2", "seq_len: saved 32, now 64"]
    assert config_diff({"betas": [0.9, 0.95]}, {"betas": (0.9, 0.95)}) == []


def test_adam_eps_is_not_the_grpo_clip_epsilon():
    """GRPO's config has ``eps`` = 0.2 (ratio clipping). The optimizer must keep Adam's ε = 1e-8: with ε = 0.2 the
    first step moved each weight by ~g/0.2·lr (≈2e-6 here) instead of Adam's lr·sign(g)."""
    from r1lab.rl.grpo import GRPOConfig
    from r1lab.train.sft import SFTConfig

    model = torch.nn.Linear(8, 8, bias=False)
    cfg = GRPOConfig(lr=1e-3, warmup_steps=0)
    assert cfg.eps == 0.2
    opt = make_optimizer(model, cfg)
    assert all(g["eps"] == 1e-8 for g in opt.param_groups)
    before = model.weight.detach().clone()
    # each gradient 4e-4: small, as a GRPO loss over many tokens gives
    (model(torch.ones(4, 8)) * 1e-4).sum().backward()
    opt.step()
    step = (model.weight.detach() - before).abs()
    assert torch.allclose(step, torch.full_like(step, 1e-3), rtol=1e-3)  # Adam's first step: lr·sign(g)
    sft = SFTConfig(model="m", data=["d"])
    assert all(g["eps"] == 1e-8 for g in make_optimizer(model, sft).param_groups)
    assert make_optimizer(model, type("C", (), {"lr": 1e-3, "adam_eps": 1e-6})).param_groups[0]["eps"] == 1e-6


def test_resume_keeps_the_configured_adam_eps():
    """A GRPO checkpoint from before the fix saved eps = 0.2; loading it keeps Adam's 1e-8 (and the moments)."""
    from r1lab.train.optim import load_optimizer_state

    model = torch.nn.Linear(4, 4)
    cfg = type("C", (), {"lr": 1e-3, "weight_decay": 0.1})
    old = make_optimizer(model, type("Old", (cfg,), {"adam_eps": 0.2}))  # as the bug built it
    model(torch.ones(2, 4)).sum().backward()
    old.step()
    opt = make_optimizer(model, cfg)
    load_optimizer_state(opt, old.state_dict())
    assert [g["eps"] for g in old.param_groups] == [0.2, 0.2]
    assert [g["eps"] for g in opt.param_groups] == [1e-8, 1e-8]
    assert torch.equal(opt.state[model.weight]["exp_avg"], old.state[model.weight]["exp_avg"])
