"""Engine decode correctness on CPU (fp32, tiny preset): latent-cache decode vs the naive full forward, raw logprobs,
continuous batching, shared prefill for n samples, and the sampler's truncations."""

import math

import pytest
import torch

from r1lab.engine import LLM, SamplingParams
from r1lab.engine.cache import LatentCache
from r1lab.engine import sampler
from r1lab.engine.runner import DeepSeekRunner
from r1lab.engine.sampler import RowParams, processed_probs
from r1lab.model import DeepSeekV3Config, DeepSeekV3ForCausalLM

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    cfg = DeepSeekV3Config.from_preset("tiny").replace(initializer_range=0.1)
    return DeepSeekV3ForCausalLM(cfg).eval()


PROMPTS = [[5, 6, 7, 8, 9], [11, 12], [3] * 17, [40], [7, 8, 9, 10, 11, 12, 13], [100, 101, 102], [9, 9]]


@pytest.mark.parametrize("dense_experts_max", [0, 64])  # multi-token step: grouped experts, or every expert densely
@pytest.mark.parametrize("all_slots", [False, True])  # gathered cache rows, or the batch in slot order over the cache
def test_absorbed_decode_matches_full_forward_every_step(model, dense_experts_max, all_slots):
    cfg = model.config
    cache = LatentCache(cfg.num_hidden_layers, 4, 64, cfg.kv_lora_rank + cfg.qk_rope_head_dim, torch.float32,
                        torch.device("cpu"))
    runner = DeepSeekRunner(model, cache, dense_experts_max=dense_experts_max)
    prompts = [[5, 6, 7, 8, 9], [11, 12], [3] * 9, [40, 41, 42]]
    slots = [2, 0, 3, 1]  # arbitrary slot assignment, every slot once
    with torch.no_grad():
        logits = runner.prefill(prompts, slots)
        seqs = [list(p) for p in prompts]
        for step in range(12):
            for i, s in enumerate(seqs):
                ref = model(torch.tensor([s])).logits[0, -1]
                assert torch.allclose(logits[i], ref, atol=1e-5, rtol=0), f"step {step} row {i}"
            nxt = logits.argmax(-1)
            for s, t in zip(seqs, nxt.tolist()):
                s.append(t)
            starts = torch.tensor([len(s) - 1 for s in seqs])
            logits = runner.decode(nxt[:, None], starts, torch.tensor(slots), 64, all_slots)[:, 0]
        # a multi-token decode step (the verification step of speculative decoding) agrees too
        extra = torch.tensor([[1, 2, 3]] * 4)
        starts = torch.tensor([len(s) for s in seqs])
        multi = runner.decode(extra, starts, torch.tensor(slots), 64, all_slots)
        for i, s in enumerate(seqs):
            ref = model(torch.tensor([s + [1, 2, 3]])).logits[0, -3:]
            assert torch.allclose(multi[i], ref, atol=1e-5, rtol=0)


def test_logprobs_are_raw_log_softmax_of_training_forward(model):
    llm = LLM(model, max_batch_size=4, seed=0)
    sp = SamplingParams(n=2, temperature=0.7, top_k=20, top_p=0.9, max_tokens=12, seed=3, stop_token_ids=[])
    outs = llm.generate(prompt_token_ids=PROMPTS[:3], sampling_params=sp)
    for req in outs:
        for comp in req.outputs:
            ids = req.prompt_token_ids + comp.token_ids
            with torch.no_grad():
                logits = model(torch.tensor([ids])).logits[0].float()
            ref = torch.log_softmax(logits, -1)[len(req.prompt_token_ids) - 1: -1]
            ref = ref.gather(-1, torch.tensor(comp.token_ids)[:, None])[:, 0]
            assert len(comp.logprobs) == len(comp.token_ids) == 12
            assert torch.allclose(torch.tensor(comp.logprobs), ref, atol=1e-5, rtol=0)


def test_continuous_batching_equals_one_at_a_time(model):
    sp = SamplingParams(temperature=0.0, max_tokens=9)
    batched = LLM(model, max_batch_size=2).generate(prompt_token_ids=PROMPTS, sampling_params=sp)
    single = LLM(model, max_batch_size=1)
    for p, out in zip(PROMPTS, batched):
        alone = single.generate(prompt_token_ids=[p], sampling_params=sp)[0]
        assert out.outputs[0].token_ids == alone.outputs[0].token_ids
        assert out.prompt_token_ids == p


def test_n_samples_share_prefill_and_match_separate_seeded_requests(model):
    llm = LLM(model, max_batch_size=8)
    shared = llm.generate(prompt_token_ids=[PROMPTS[0]],
                          sampling_params=SamplingParams(n=3, temperature=1.0, max_tokens=10, seed=5))[0]
    assert [c.index for c in shared.outputs] == [0, 1, 2]
    # one slot: every sample prefilled on its own (sample j's stream is (seed, j, prompt), params.stream_seed)
    separate = LLM(model, max_batch_size=1).generate(
        prompt_token_ids=[PROMPTS[0]], sampling_params=SamplingParams(n=3, temperature=1.0, max_tokens=10, seed=5))[0]
    assert [c.token_ids for c in separate.outputs] == [c.token_ids for c in shared.outputs]
    first = llm.generate(prompt_token_ids=[PROMPTS[0]],
                         sampling_params=SamplingParams(temperature=1.0, max_tokens=10, seed=5))[0]
    assert first.outputs[0].token_ids == shared.outputs[0].token_ids  # sample 0 is the n = 1 request's sample
    # n larger than the slots: samples wait for free slots and are prefilled again, same result
    small = LLM(model, max_batch_size=2).generate(
        prompt_token_ids=[PROMPTS[0]], sampling_params=SamplingParams(n=3, temperature=1.0, max_tokens=10, seed=5))[0]
    assert [c.token_ids for c in small.outputs] == [c.token_ids for c in shared.outputs]
    assert len({tuple(c.token_ids) for c in shared.outputs}) > 1  # different seeds, different samples


def test_seeded_sampling_is_reproducible_and_greedy_is_deterministic(model):
    llm = LLM(model)
    sp = SamplingParams(temperature=1.0, max_tokens=8, seed=11)
    a = llm.generate(prompt_token_ids=[PROMPTS[1]], sampling_params=sp)[0].outputs[0].token_ids
    b = llm.generate(prompt_token_ids=[PROMPTS[1]], sampling_params=sp)[0].outputs[0].token_ids
    assert a == b


def test_seeded_streams_are_per_prompt_and_batch_independent(model):
    """One seeded SamplingParams for many prompts: each prompt gets its own random stream (the sampler reads one
    number per token, so shared streams would correlate the prompts' samples), and a prompt's samples do not depend
    on the batch it runs in."""
    llm = LLM(model, max_batch_size=4)
    sp = SamplingParams(n=2, temperature=1.0, max_tokens=8, seed=11, stop_token_ids=[])
    seeds = [s.generator.initial_seed() for p in PROMPTS[:3] for s in llm._sequences(0, p, sp)]
    assert len(set(seeds)) == 6
    together = llm.generate(prompt_token_ids=PROMPTS[:3], sampling_params=sp)
    alone = llm.generate(prompt_token_ids=[PROMPTS[2]], sampling_params=sp)[0]
    assert [c.token_ids for c in together[2].outputs] == [c.token_ids for c in alone.outputs]


def _rp(**kw):
    base = {"temperature": [1.0], "top_k": [0], "top_p": [1.0], "min_p": [0.0]}
    base.update({k: [v] for k, v in kw.items()})
    return RowParams(base["temperature"], base["top_k"], base["top_p"], base["min_p"], torch.device("cpu"))


def test_sampler_truncations():
    probs = torch.tensor([[0.4, 0.3, 0.15, 0.1, 0.05]])
    logits = probs.log()
    assert torch.allclose(processed_probs(logits, _rp()), probs, atol=1e-6)
    top2 = processed_probs(logits, _rp(top_k=2))
    assert torch.allclose(top2, torch.tensor([[4 / 7, 3 / 7, 0, 0, 0]]), atol=1e-6)
    nucleus = processed_probs(logits, _rp(top_p=0.8))  # 0.4 + 0.3 < 0.8 → the third token is still needed
    assert torch.allclose(nucleus, torch.tensor([[0.4, 0.3, 0.15, 0, 0]]) / 0.85, atol=1e-6)
    minp = processed_probs(logits, _rp(min_p=0.3))  # keep p >= 0.12
    assert torch.allclose(minp, torch.tensor([[0.4, 0.3, 0.15, 0, 0]]) / 0.85, atol=1e-6)
    greedy = processed_probs(logits, _rp(temperature=0.0))
    assert greedy.tolist() == [[1.0, 0.0, 0.0, 0.0, 0.0]]
    hot = processed_probs(logits, _rp(temperature=0.5))
    expected = probs ** 2 / (probs ** 2).sum()
    assert torch.allclose(hot, expected, atol=1e-6)
    assert math.isclose(float(processed_probs(logits, _rp(top_k=3, top_p=0.5)).sum()), 1.0, rel_tol=1e-6)


def test_traced_decode_step_matches_eager(model):
    """The decode step traced by dynamo (the eager backend stands in for CUDA graphs on CPU) gives the same tokens;
    at small batch it is one graph: no host synchronisation inside."""
    sp = SamplingParams(temperature=0.0, max_tokens=8)
    ref = LLM(model, max_batch_size=4).generate(prompt_token_ids=PROMPTS[:3], sampling_params=sp)
    llm = LLM(model, max_batch_size=4, compile={"backend": "eager", "fullgraph": True})
    runner = llm._runner
    assert runner.compiled and runner.kv_bucket(70) == 128
    out = llm.generate(prompt_token_ids=PROMPTS[:3], sampling_params=sp)
    assert runner.compiled  # no fallback to eager happened
    assert [o.outputs[0].token_ids for o in out] == [o.outputs[0].token_ids for o in ref]


def test_dense_expert_decode_path_equals_grouped_and_traces_whole(model):
    """Every expert on every token, weighted by the scattered routing weights, equals the grouped path; a decode step
    that takes it (N·K > E) traces as one graph (fullgraph) and gives the eager engine's tokens."""
    from r1lab.engine.runner import dense_experts

    moe = model.model.layers[1].mlp
    g = torch.Generator().manual_seed(0)
    x_ND = torch.randn(37, model.config.hidden_size, generator=g)
    with torch.no_grad():
        weights_NK, experts_NK, _ = moe.gate(x_ND)
        ref = moe.experts(x_ND, weights_NK, experts_NK)
        got = dense_experts(moe.experts, x_ND, weights_NK, experts_NK)
    assert (got - ref).abs().max() < 1e-5
    sp = SamplingParams(temperature=0.0, max_tokens=8)
    eager = LLM(model, max_batch_size=8).generate(prompt_token_ids=PROMPTS, sampling_params=sp)
    assert eager[0].outputs and model.config.num_experts_per_tok * len(PROMPTS) > model.config.n_routed_experts
    llm = LLM(model, max_batch_size=8, compile={"backend": "eager", "fullgraph": True})
    llm._runner.dense_experts_max = 64
    out = llm.generate(prompt_token_ids=PROMPTS, sampling_params=sp)
    assert llm._runner.compiled  # fullgraph tracing of the 7-row step succeeded: no fallback to eager
    assert [o.outputs[0].token_ids for o in out] == [o.outputs[0].token_ids for o in eager]


def test_decode_step_without_sync_free_grouped_gemm_is_one_graph(model):
    """fp32 under compile has no sync-free grouped GEMM (nor has fp32 on CUDA): above N·K > E the decode step takes the
    dense expert path instead of the per-expert fallback, whose host-read counts break the graph and recompile for
    every new routing (23 graphs and 5 breaks here before the change; on a GPU each one a compile and a CUDA-graph
    recording). Compiled as CUDA graphs are (no fullgraph), the 7-row step is one graph with the eager tokens."""
    import torch._dynamo
    from torch._dynamo.utils import counters

    sp = SamplingParams(temperature=0.0, max_tokens=12)
    eager = LLM(model, max_batch_size=8).generate(prompt_token_ids=PROMPTS, sampling_params=sp)
    torch._dynamo.reset()
    counters.clear()
    llm = LLM(model, max_batch_size=8, compile={"backend": "eager"})
    assert llm._runner.dense_experts_max == 0 and model.config.num_experts_per_tok * len(PROMPTS) > \
        model.config.n_routed_experts
    out = llm.generate(prompt_token_ids=PROMPTS, sampling_params=sp)
    assert llm._runner.compiled and not counters["graph_break"]
    assert counters["stats"]["unique_graphs"] == 1
    assert [o.outputs[0].token_ids for o in out] == [o.outputs[0].token_ids for o in eager]


def _rows(**kw):
    n = len(next(iter(kw.values())))
    base = {"temperature": [1.0] * n, "top_k": [0] * n, "top_p": [1.0] * n, "min_p": [0.0] * n}
    base.update(kw)
    return RowParams(base["temperature"], base["top_k"], base["top_p"], base["min_p"], torch.device("cpu"))


@pytest.mark.parametrize("params", [
    {"temperature": [0.6, 0.6, 1.0, 0.3], "top_p": [0.95, 0.9, 0.5, 0.95]},  # peaked: the shortlist suffices
    {"temperature": [0.6, 0.7, 0.8, 0.6], "top_k": [5, 0, 8, 0], "top_p": [1.0, 0.9, 0.95, 0.8],
     "min_p": [0.0, 0.05, 0.0, 0.1]},
    {"temperature": [0.0, 0.6, 0.6, 0.0], "top_p": [1.0, 0.9, 0.95, 1.0]},  # greedy rows mixed in
    {"temperature": [3.0, 0.6, 0.6, 0.6], "top_p": [0.99, 0.9, 0.9, 0.9]},  # one flat row: the full sort
    {"temperature": [0.6, 0.6, 0.6, 0.6], "top_k": [20, 0, 0, 0], "top_p": [1.0, 0.9, 0.9, 0.9]},  # top-k > K
])
def test_shortlist_candidates_equal_the_full_sort(params):
    torch.manual_seed(0)
    logits = torch.randn(4, 300) * 4
    rp = _rows(**params)
    ref = processed_probs(logits, rp, shortlist=0)  # the reference: sort the whole vocabulary
    fast = processed_probs(logits, rp, shortlist=8)
    assert torch.allclose(fast, ref, atol=1e-6)
    probs, ids = sampler.candidates(logits, rp, shortlist=8)
    flat_row = max(params["temperature"]) > 2 or max(params.get("top_k", [0])) > 8
    assert probs.shape[-1] == (300 if flat_row else 8)  # which path ran: the check must pick the full sort only then
    if flat_row:  # only that row sorted in full, the others padded shortlists
        assert int((probs > 0).sum(-1).max()) > 8 and int((probs > 0).sum(-1).min()) <= 8


def test_sampled_tokens_follow_the_truncated_distribution():
    torch.manual_seed(1)
    logits = torch.randn(1, 40).expand(4000, 40).contiguous()
    rp = _rows(temperature=[0.7] * 4000, top_p=[0.9] * 4000, min_p=[0.02] * 4000)
    target = processed_probs(logits[:1], _rows(temperature=[0.7], top_p=[0.9], min_p=[0.02]), shortlist=0)[0]
    gen = torch.Generator().manual_seed(0)
    assert sampler.candidates(logits, rp, shortlist=20)[0].shape[-1] == 20  # the shortlist path runs
    tokens, lps = sampler.sample(logits, rp, sampler.RowNoise([None] * 4000, gen, torch.device("cpu")), shortlist=20)
    assert torch.allclose(lps, torch.log_softmax(logits[0], -1)[tokens])
    counts = torch.bincount(tokens, minlength=40).float()
    assert counts[target == 0].sum() == 0  # never a truncated token
    expected = 4000 * target
    keep = expected > 0
    chi2 = float(((counts[keep] - expected[keep]) ** 2 / expected[keep]).sum())
    df = int(keep.sum()) - 1
    assert df >= 3 and chi2 < df + 4 * math.sqrt(2 * df)  # ~ 4 SD above the chi-square mean
