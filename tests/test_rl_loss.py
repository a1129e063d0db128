"""GRPO loss, advantages and k3 KL against hand-computed numbers (r1lab.rl.loss / r1lab.rl.advantage)."""

import math

import pytest
import torch

from r1lab.rl.advantage import group_advantages
from r1lab.rl.loss import Normalizer, grpo_loss, k3_kl, token_weights

# One group, G = 2 outputs, T = 3 completion slots; output 2 has 2 tokens.
MASK = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
ADV = torch.tensor([1.0, -1.0])
RATIO = torch.tensor([[1.0, 1.5, 0.5], [1.0, 0.5, 1.0]])
OLD = torch.full((2, 3), -1.0)
LN2 = math.log(2.0)


def _inputs():
    logp = (OLD + RATIO.log()).clone().requires_grad_(True)
    ref = logp.detach().clone()
    ref[0, 0] += LN2  # π_ref/π = 2 on one token: k3 = 2 − ln 2 − 1 = 0.306853
    return logp, ref


# Per-token objective, ε = ε_high = 0.2, β = 0.04, written out:
#   output 1 (A = +1): ρ=1 → 1 − 0.04·0.306853 = 0.987726;  ρ=1.5 → min(1.5, 1.2) = 1.2;  ρ=0.5 → min(0.5, 0.8) = 0.5
#   output 2 (A = −1): ρ=1 → −1;  ρ=0.5 → min(−0.5, −0.8) = −0.8
# paper:      ((0.987726 + 1.2 + 0.5)/3 + (−1 − 0.8)/2) / 2 = (0.895909 − 0.9)/2 = −0.0020457 → loss +0.0020457
# token_mean: (0.987726 + 1.2 + 0.5 − 1 − 0.8) / 5 = 0.887726/5 = 0.1775452           → loss −0.1775452
# dr_grpo:    0.887726 / (G·L) with L = max_len = 4: 0.887726/8 = 0.1109657             → loss −0.1109657
EXPECTED = {"paper": 0.0020457, "token_mean": -0.1775452, "dr_grpo": -0.1109657}


@pytest.mark.parametrize("aggregation", sorted(EXPECTED))
def test_loss_matches_hand_computation(aggregation):
    logp, ref = _inputs()
    w = token_weights(MASK, Normalizer.of(MASK, max_len=4), aggregation)
    out = grpo_loss(logp, OLD, ADV, w, eps_low=0.2, eps_high=0.2, beta=0.04, ref_logp_NT=ref)
    assert out.loss.item() == pytest.approx(EXPECTED[aggregation], abs=1e-6)
    assert out.tokens == 5
    assert out.clipped == 2  # (0,1): ρ>1.2 with A>0; (1,1): ρ<0.8 with A<0
    assert out.kl_sum == pytest.approx(2 - LN2 - 1, abs=1e-6)


def test_clipped_tokens_get_zero_gradient():
    logp, _ = _inputs()
    w = token_weights(MASK, Normalizer.of(MASK, max_len=4), "token_mean")
    grpo_loss(logp, OLD, ADV, w, eps_low=0.2, eps_high=0.2, beta=0.0).loss.backward()
    g = logp.grad
    assert g[0, 1] == 0 and g[1, 1] == 0  # clipped: outside [1−ε, 1+ε_high] on the side the sign of A pushes
    assert g[0, 2] != 0  # ρ = 0.5 with A > 0: the unclipped ρA is the min, gradient flows (pushes ρ up)
    assert g[0, 2] < 0 and g[1, 0] > 0  # loss falls as the positive-advantage token's prob rises, and vice versa
    assert g[1, 2] == 0  # padding


def test_clip_higher_widens_upper_bound_only():
    logp, _ = _inputs()
    w = token_weights(MASK, Normalizer.of(MASK, max_len=4), "token_mean")
    grpo_loss(logp, OLD, ADV, w, eps_low=0.2, eps_high=0.6, beta=0.0).loss.backward()
    assert logp.grad[0, 1] != 0  # ρ = 1.5 < 1.6 now inside the range
    assert logp.grad[1, 1] == 0  # lower bound unchanged


def test_k3_nonnegative_and_zero_at_reference():
    torch.manual_seed(0)
    a, b = torch.randn(1000) - 2, torch.randn(1000) - 2
    assert (k3_kl(a, b) >= 0).all()
    assert torch.equal(k3_kl(a, a), torch.zeros(1000))


def test_zero_variance_group_contributes_no_gradient():
    rewards = torch.tensor([1.0, 0.0, 0.5, 0.5])  # group 2 is all 0.5
    adv = group_advantages(rewards, 2, drop_zero_variance=True)
    assert adv.advantages_N[2:].tolist() == [0.0, 0.0] and adv.keep_N.tolist() == [True, True, False, False]
    mask = torch.ones(4, 3) * adv.keep_N[:, None]
    logp = torch.full((4, 3), -1.0, requires_grad=True)
    ref = torch.full((4, 3), -1.5)
    w = token_weights(mask, Normalizer.of(mask, 3), "paper")
    grpo_loss(logp, logp.detach(), adv.advantages_N, w, beta=0.1, ref_logp_NT=ref).loss.backward()
    assert torch.all(logp.grad[2:] == 0) and torch.all(logp.grad[:2] != 0)


def test_advantage_options():
    r = torch.tensor([1.0, 0.0, 0.0, 0.0])
    # population std of [1,0,0,0] = sqrt(3)/4 = 0.4330; (1 − 0.25)/0.4330 = 1.7321
    a = group_advantages(r, 4, eps=0.0)
    assert a.advantages_N[0].item() == pytest.approx(math.sqrt(3), abs=1e-5)
    dr = group_advantages(r, 4, scale_by_std=False)  # Dr. GRPO: r − mean only
    assert dr.advantages_N.tolist() == [0.75, -0.25, -0.25, -0.25]
    t = group_advantages(r, 2, truncated_N=torch.tensor([False, True, False, False]), mask_truncated=True)
    assert t.keep_N.tolist() == [True, False, True, True]
    assert t.advantages_N[1].item() < 0  # the truncated output still counts in its group's statistics


def test_group_size_below_two_is_an_error():
    with pytest.raises(ValueError, match="group_size"):
        group_advantages(torch.tensor([1.0, 0.0]), 1)
    with pytest.raises(ValueError, match="multiple of G"):
        group_advantages(torch.tensor([1.0, 0.0, 1.0]), 2)


def test_unknown_aggregation_lists_choices():
    with pytest.raises(ValueError, match="dr_grpo"):
        token_weights(MASK, Normalizer.of(MASK, 4), "sequence_sum")
