"""MTP speculative decoding: greedy output identical to plain greedy (random and trained weights, k = 1..3), draft
logits identical to the training forward's MTP logits (the per-depth caches and rollback are exact), and under
sampling the emitted tokens follow the target distribution (chi-square against the exact distribution)."""

import copy
import math

import pytest
import torch

from r1lab.engine import LLM, SamplingParams
from r1lab.model import DeepSeekV3Config, DeepSeekV3ForCausalLM

PERIOD = [10, 20, 30, 40, 50, 60, 70]
PROMPTS = [[10, 20, 30], [40, 50], [70, 10, 20, 30, 40], [60], [33, 44, 55, 66]]


pytestmark = pytest.mark.usefixtures("one_thread")


def _train_periodic(depths: int, steps: int) -> DeepSeekV3ForCausalLM:
    """A tiny model trained a few dozen steps on a periodic sequence: its MTP drafts get accepted."""
    torch.manual_seed(0)
    model = DeepSeekV3ForCausalLM(DeepSeekV3Config.from_preset("tiny").replace(num_nextn_predict_layers=depths))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    gen = torch.Generator().manual_seed(0)
    for _ in range(steps):
        offsets = torch.randint(0, 7, (4,), generator=gen).tolist()
        x = torch.tensor([[PERIOD[(o + i) % 7] for i in range(32)] for o in offsets])
        out = model(x, labels=x)
        loss = out.total_loss(1.0, 0.0)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


@pytest.fixture(scope="module")
def trained():
    return _train_periodic(depths=2, steps=30)


@pytest.fixture(scope="module")
def partial():
    return _train_periodic(depths=2, steps=4)  # drafts accepted about 80% of the time: rollbacks happen


@pytest.fixture(scope="module")
def random_model():
    torch.manual_seed(3)
    return DeepSeekV3ForCausalLM(DeepSeekV3Config.from_preset("tiny").replace(initializer_range=0.1)).eval()


def _greedy(llm, max_tokens=20):
    out = llm.generate(prompt_token_ids=PROMPTS,
                       sampling_params=SamplingParams(temperature=0, max_tokens=max_tokens, stop_token_ids=[]))
    return [o.outputs[0].token_ids for o in out], [o.outputs[0].logprobs for o in out]


@pytest.mark.parametrize("which,k", [("random", 1), ("random", 2), ("partial", 1), ("partial", 3), ("trained", 1),
                                     ("trained", 2), ("trained", 3)])
def test_greedy_speculative_equals_plain_greedy(which, k, trained, partial, random_model):
    model = {"trained": trained, "partial": partial, "random": random_model}[which]
    ref_ids, ref_lps = _greedy(LLM(model, max_batch_size=8))
    spec = LLM(model, max_batch_size=2, speculative_mtp=True, num_speculative_tokens=k)  # also continuous batching
    ids, lps = _greedy(spec)
    assert ids == ref_ids
    for a, b in zip(lps, ref_lps):
        assert torch.allclose(torch.tensor(a), torch.tensor(b), atol=1e-5)
    rate = spec.stats.acceptance_rate
    if which == "trained":
        assert rate > 0.5 and spec.stats.mean_accepted_length > 1.5
    if which == "partial":
        assert 0.05 < rate < 0.98
    assert 0.0 <= rate <= 1.0


@pytest.mark.parametrize("k,dtype", [(1, torch.float32), (2, torch.bfloat16)])
def test_traced_speculative_round_matches_eager(k, dtype, partial):
    """With compile on, the verification step (T = k + 1) and the MTP draft windows run as whole dynamo graphs
    (fullgraph: no graph break, so no host sync inside; the eager backend stands in for CUDA graphs on CPU) and give
    the same tokens and log-probs as eager decoding, rollbacks included. k = 2 sends the windows through the grouped
    expert GEMM, whose tracing needs bf16 (its meta kernel is the CUDA one), so it is compared with eager speculative
    decoding in bf16 (same operations, so equal results); k = 1 in fp32 with eager plain greedy."""
    model = copy.deepcopy(partial).to(dtype)
    ref = LLM(model, max_batch_size=8) if k == 1 else \
        LLM(model, max_batch_size=2, speculative_mtp=True, num_speculative_tokens=k)
    ref_ids, ref_lps = _greedy(ref)
    spec = LLM(model, max_batch_size=2, speculative_mtp=True, num_speculative_tokens=k,
               compile={"backend": "eager", "fullgraph": True})
    ids, lps = _greedy(spec)
    assert spec._runner.compiled  # no fallback to eager happened
    assert ids == ref_ids
    for a, b in zip(lps, ref_lps):
        assert torch.allclose(torch.tensor(a), torch.tensor(b), atol=1e-5)
    assert 0.05 < spec.stats.acceptance_rate < 0.98


@pytest.mark.parametrize("which,temperature", [("trained", 0.0), ("trained", 1.0), ("partial", 0.0), ("partial", 1.0)])
def test_draft_logits_equal_training_mtp_logits(which, temperature, trained, partial):
    """Record every draft window; where the tokens it used were accepted, its logits must equal the full forward's
    MTP logits at that position (depth 2 chains module 2 on module 1's hidden state, as in training)."""
    model = trained if which == "trained" else partial
    llm = LLM(model, max_batch_size=1, speculative_mtp=True, num_speculative_tokens=2, seed=0)
    runner = llm._runner
    records = []
    original = runner.mtp_window

    def spy(depth, slots_B, start_B, count_B, w, kv_len, eager=False):
        logits = original(depth, slots_B, start_B, count_B, w, kv_len, eager=eager)
        m = int(start_B[0] + count_B[0] - 1)
        used = runner.cache.tokens_SL[int(slots_B[0]), m + 1: m + 1 + depth].tolist()
        records.append((depth, m, used, logits[0].clone()))
        return logits

    runner.mtp_window = spy
    prompt = [10, 20, 30, 40]
    out = llm.generate(prompt_token_ids=[prompt], sampling_params=SamplingParams(
        temperature=temperature, max_tokens=25, stop_token_ids=[]))[0].outputs[0]
    full = prompt + out.token_ids
    with torch.no_grad():
        ref = model(torch.tensor([full]), return_mtp_logits=True).mtp_logits
    checked = {1: 0, 2: 0}
    for depth, m, used, logits in records:
        if m + depth < len(full) and used == full[m + 1: m + 1 + depth]:
            assert torch.allclose(logits, ref[depth - 1][0, m], atol=1e-4), (depth, m)
            checked[depth] += 1
    assert checked[1] >= 5 and checked[2] >= 3


def _chi2_z(counts: torch.Tensor, probs: torch.Tensor) -> float:
    """Wilson-Hilferty z-score of Pearson's chi-square (cells with expected count < 5 pooled)."""
    n = counts.sum()
    expected = probs * n
    small = expected < 5
    obs = torch.cat([counts[~small], counts[small].sum()[None]])
    exp = torch.cat([expected[~small], expected[small].sum()[None]])
    keep = exp > 0
    x2 = float(((obs[keep] - exp[keep]) ** 2 / exp[keep]).sum())
    df = int(keep.sum()) - 1
    return ((x2 / df) ** (1 / 3) - (1 - 2 / (9 * df))) / math.sqrt(2 / (9 * df))


@pytest.mark.parametrize("k", [1, 2])
def test_speculative_sampling_matches_target_distribution(k):
    torch.manual_seed(4)
    cfg = DeepSeekV3Config.from_preset("tiny").replace(vocab_size=12, initializer_range=0.3)
    model = DeepSeekV3ForCausalLM(cfg).eval()
    prompt = [3, 7, 5]
    v = cfg.vocab_size
    with torch.no_grad():  # exact joint distribution of tokens 2 and 3 of the completion
        p1 = torch.softmax(model(torch.tensor([prompt])).logits[0, -1], -1)
        seq2 = torch.tensor([prompt + [a] for a in range(v)])
        p2 = torch.softmax(model(seq2).logits[:, -1], -1)  # [t1, t2]
        seq3 = torch.tensor([prompt + [a, b] for a in range(v) for b in range(v)])
        p3 = torch.softmax(model(seq3).logits[:, -1], -1).view(v, v, v)  # [t1, t2, t3]
        joint = (p1[:, None, None] * p2[:, :, None] * p3).sum(0).reshape(-1)  # P(t2, t3)
    n = 3000
    sp = SamplingParams(n=n, temperature=1.0, max_tokens=3, stop_token_ids=[])
    spec = LLM(model, max_batch_size=256, speculative_mtp=True, num_speculative_tokens=k, seed=0)
    plain = LLM(model, max_batch_size=256, seed=0)
    for llm in (spec, plain):
        outs = llm.generate(prompt_token_ids=[prompt], sampling_params=sp)[0].outputs
        counts = torch.zeros(v * v)
        for o in outs:
            counts[o.token_ids[1] * v + o.token_ids[2]] += 1
        z = _chi2_z(counts, joint)
        assert z < 3.5, f"chi-square z = {z:.2f}"
        assert 0.5 * float((counts / n - joint).abs().sum()) < 0.12
    assert 0.05 < spec.stats.acceptance_rate < 0.95  # drafts both accepted and rejected: both branches exercised
