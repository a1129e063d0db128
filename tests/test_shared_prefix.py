"""Shared-prefix training forward (rl/shared_prefix.py) = the padded reference layout (rl/logprobs.py):
log-probs, entropies, gradients and a whole GRPO update, on the tiny MoE model in fp32."""

import pytest
import torch
import transformers

from r1lab.model import DeepSeekV3Config, DeepSeekV3ForCausalLM
from r1lab.rl.advantage import group_advantages
from r1lab.rl.logprobs import completion_logprobs
from r1lab.rl.rollout import RolloutBatch, collate
from r1lab.rl.sampler import Sample
from r1lab.rl.shared_prefix import pack_groups, shared_prefix_logprobs, supports_shared_prefix
from r1lab.rl.update import UpdateSettings, policy_update, reference_logprobs

V, G = 64, 3


def tiny_model(seed: int = 0) -> DeepSeekV3ForCausalLM:
    torch.manual_seed(seed)
    return DeepSeekV3ForCausalLM(DeepSeekV3Config.from_preset("tiny").replace(vocab_size=V))


def rollout_batch(pad_multiple: int = 1) -> RolloutBatch:
    """3 groups × G: prompts of 4, 7 and 1 tokens; completions of 1..9 tokens (padding differs per group)."""
    g = torch.Generator().manual_seed(3)
    prompts = [torch.randint(3, V, (n,), generator=g).tolist() for n in (4, 7, 1)]
    lengths = [[1, 5, 9], [3, 3, 6], [2, 8, 4]]
    samples = [[Sample(torch.randint(3, V, (n,), generator=g).tolist(), [-1.0] * n, "stop") for n in row]
               for row in lengths]
    t = collate(prompts, samples, pad_id=0, multiple=pad_multiple)
    N = G * len(prompts)
    rewards_N = torch.tensor([0.0, 1.0, 0.5, 1.0, 0.0, 0.0, 0.2, 0.9, 0.4])
    return RolloutBatch(rewards_NK=rewards_N[:, None], reward_names=["accuracy"], rewards_N=rewards_N, group_size=G,
                        texts=[""] * N, problems=[None] * N, **t)


def reference(model, b: RolloutBatch, with_entropy=False):
    return completion_logprobs(model, b.input_ids_NS, b.attention_mask_NS, b.completion_len, chunk_size=64,
                               with_entropy=with_entropy)


def shared(model, b: RolloutBatch, lo=0, hi=None, with_entropy=False):
    hi = b.input_ids_NS.shape[0] if hi is None else hi
    return shared_prefix_logprobs(model, b.input_ids_NS[lo:hi], b.attention_mask_NS[lo:hi],
                                  b.completion_mask_NT[lo:hi], b.group_ids_N[lo:hi], with_entropy=with_entropy)


def test_pack_groups_layout_has_no_padding_inside_a_row_and_one_prompt_per_group():
    b = rollout_batch(pad_multiple=4)
    p = pack_groups(b.input_ids_NS, b.attention_mask_NS, b.completion_mask_NT, b.group_ids_N)
    assert p.ids_RL.shape[0] == 3
    assert (p.seg_RL != 0).sum(dim=1).tolist() == [4 + 15, 7 + 12, 1 + 14]
    assert p.pos_RL[1, 7:10].tolist() == [7, 8, 9] and p.pos_RL[1, 10:13].tolist() == [7, 8, 9]
    mask = p.attention_mask()[1, 0]
    assert mask[8, :7].all() and mask[8, 7:9].all() and not mask[8, 9:].any()  # c_1 sees prompt + itself
    assert mask[10, :7].all() and not mask[10, 7:10].any() and mask[10, 10]  # c_2 does not see c_1


def test_logprobs_and_entropies_equal_the_padded_reference():
    model = tiny_model().eval()
    b = rollout_batch(pad_multiple=4)
    with torch.no_grad():
        ref, got = reference(model, b, with_entropy=True), shared(model, b, with_entropy=True)
    m = b.completion_mask_NT.bool()
    assert torch.allclose(got.logp_NT[m], ref.logp_NT[m], atol=1e-5)
    assert torch.allclose(got.entropy_NT[m], ref.entropy_NT[m], atol=1e-5)
    assert (got.logp_NT[~m] == 0).all()
    assert not torch.allclose(got.logp_NT[m], torch.zeros(int(m.sum())))


def test_a_slice_that_cuts_a_group_equals_the_reference():
    model = tiny_model().eval()
    b = rollout_batch()
    with torch.no_grad():
        ref, got = reference(model, b).logp_NT[2:7], shared(model, b, 2, 7).logp_NT
    m = b.completion_mask_NT[2:7].bool()
    assert torch.allclose(got[m], ref[m], atol=1e-5)


def test_gradients_equal_the_padded_reference():
    b = rollout_batch()
    w_NT = torch.randn(b.completion_mask_NT.shape, generator=torch.Generator().manual_seed(0)) * b.completion_mask_NT
    grads = []
    for fn in (reference, shared):
        model = tiny_model().train()
        (fn(model, b).logp_NT * w_NT).sum().backward()
        grads.append({k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys() and len(grads[0]) > 10
    for k in grads[0]:
        assert torch.allclose(grads[0][k], grads[1][k], atol=1e-5, rtol=1e-4), k


def test_policy_update_and_reference_logprobs_agree_between_layouts():
    b = rollout_batch(pad_multiple=4)
    adv = group_advantages(b.rewards_N, G)
    base = UpdateSettings(eps=0.2, eps_high=0.28, max_new_tokens=12, micro_batch=4, max_grad_norm=1.0)
    models, stats = [], []
    for flag in (False, True):
        model = tiny_model()
        opt = torch.optim.SGD(model.parameters(), lr=0.5)
        s, old = policy_update(model, opt, b, adv, UpdateSettings(**{**base.__dict__, "shared_prefix": flag}))
        models.append(model)
        stats.append((s, old))
    assert stats[0][0]["loss"] == pytest.approx(stats[1][0]["loss"], abs=1e-6)
    assert stats[0][0]["entropy"] == pytest.approx(stats[1][0]["entropy"], abs=1e-5)
    m = b.completion_mask_NT.bool()
    assert torch.allclose(stats[0][1][m], stats[1][1][m], atol=1e-5)
    for (k, pa), pb in zip(models[0].named_parameters(), models[1].parameters()):
        assert torch.allclose(pa, pb, atol=1e-6), k
    assert not torch.equal(models[0].lm_head.weight, tiny_model().lm_head.weight)
    ra = reference_logprobs(models[0], b, 4, shared_prefix=False)
    rb = reference_logprobs(models[0], b, 4, shared_prefix=True)
    assert torch.allclose(ra[m], rb[m], atol=1e-5)


def test_rows_of_one_group_with_different_prompts_are_refused():
    b = rollout_batch()
    ids = b.input_ids_NS.clone()
    ids[1, ids.shape[1] - b.completion_len - 1] += 1  # last prompt token of row 1 (group 0)
    with pytest.raises(ValueError, match="different prompts"):
        pack_groups(ids, b.attention_mask_NS, b.completion_mask_NT, b.group_ids_N)


def hf_model(arch: str, attn: str):
    torch.manual_seed(0)
    kw = dict(vocab_size=V, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
              num_key_value_heads=2, attn_implementation=attn)
    if arch == "qwen2":
        return transformers.Qwen2ForCausalLM(transformers.Qwen2Config(**kw))
    if arch == "qwen3":
        return transformers.Qwen3ForCausalLM(transformers.Qwen3Config(head_dim=8, **kw))
    return transformers.LlamaForCausalLM(transformers.LlamaConfig(**kw))


def test_which_models_take_the_shared_path():
    assert supports_shared_prefix(tiny_model())
    assert supports_shared_prefix(hf_model("qwen2", "sdpa")) and supports_shared_prefix(hf_model("llama", "eager"))
    gpt2 = transformers.GPT2LMHeadModel(transformers.GPT2Config(vocab_size=V, n_embd=32, n_layer=1, n_head=2))
    assert not supports_shared_prefix(gpt2)
    flash = hf_model("qwen2", "sdpa")
    flash.config._attn_implementation_internal = "flash_attention_2"  # ignores 4D masks: must take the padded path
    assert flash.config._attn_implementation == "flash_attention_2" and not supports_shared_prefix(flash)


@pytest.mark.parametrize("arch,attn", [("qwen2", "sdpa"), ("qwen2", "eager"), ("qwen3", "sdpa"), ("llama", "sdpa")])
def test_transformers_models_on_packed_rows_equal_the_padded_reference(arch, attn):
    """The decoder gets an additive 4D mask (eager attention would add a boolean one as 0/1: wrong logits)."""
    b = rollout_batch(pad_multiple=4)
    m = b.completion_mask_NT.bool()
    w_NT = torch.randn(m.shape, generator=torch.Generator().manual_seed(0)) * m
    res = []
    for fn in (reference, shared):
        model = hf_model(arch, attn).train()
        lp = fn(model, b).logp_NT
        (lp * w_NT).sum().backward()
        res.append((lp.detach(), model.lm_head.weight.grad.clone(), model.model.layers[0].self_attn.q_proj.weight.grad))
    assert torch.allclose(res[0][0][m], res[1][0][m], atol=1e-5)
    assert torch.allclose(res[0][1], res[1][1], atol=1e-5) and torch.allclose(res[0][2], res[1][2], atol=1e-5)


def test_transformers_packed_rows_under_bf16_autocast():
    """amp (GRPO's CUDA default) on the CPU: the additive mask follows the autocast dtype."""
    b = rollout_batch()
    m = b.completion_mask_NT.bool()
    model = hf_model("qwen2", "sdpa").eval()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        ref, got = reference(model, b).logp_NT, shared(model, b).logp_NT
    assert (ref[m] - got[m]).abs().max() < 0.05


def test_logits_at_cannot_be_combined_with_labels():
    model = tiny_model()
    ids = torch.randint(3, V, (1, 5))
    with pytest.raises(ValueError, match="logits_at"):
        model(ids, labels=ids, logits_at=torch.tensor([0, 1]))
    assert model(ids, logits_at=torch.tensor([0, 3])).logits.shape == (2, V)


def test_rows_split_at_max_row_len_still_equal_the_reference():
    model = tiny_model().eval()
    b = rollout_batch()
    S = b.input_ids_NS.shape[1]
    with torch.no_grad():
        ref = reference(model, b).logp_NT
        got = shared_prefix_logprobs(model, b.input_ids_NS, b.attention_mask_NS, b.completion_mask_NT, b.group_ids_N,
                                     max_row_len=S).logp_NT
    p = pack_groups(b.input_ids_NS, b.attention_mask_NS, b.completion_mask_NT, b.group_ids_N, max_row_len=S)
    assert p.ids_RL.shape[0] > 3 and p.ids_RL.shape[1] <= S  # groups were split, no row over the limit
    m = b.completion_mask_NT.bool()
    assert torch.allclose(got[m], ref[m], atol=1e-5)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_shared_prefix_equals_padded_on_cuda_in_bf16():
    model = tiny_model().to(device="cuda", dtype=torch.bfloat16).eval()
    b = rollout_batch(pad_multiple=4)
    with torch.no_grad():
        ref = completion_logprobs(model, b.input_ids_NS.cuda(), b.attention_mask_NS.cuda(), b.completion_len,
                                  chunk_size=64).logp_NT
        got = shared(model, b).logp_NT
    m = b.completion_mask_NT.bool().cuda()
    assert (got[m] - ref[m]).abs().max() < 0.05  # bf16 rounding of different kernel shapes; fp32 is tested at 1e-5


def test_rounding_the_packed_width_changes_no_result():
    model = tiny_model().eval()
    b = rollout_batch()
    with torch.no_grad():
        a = shared_prefix_logprobs(model, b.input_ids_NS, b.attention_mask_NS, b.completion_mask_NT, b.group_ids_N,
                                   multiple=1).logp_NT
        r = shared_prefix_logprobs(model, b.input_ids_NS, b.attention_mask_NS, b.completion_mask_NT, b.group_ids_N,
                                   multiple=64).logp_NT
    assert pack_groups(b.input_ids_NS, b.attention_mask_NS, b.completion_mask_NT, b.group_ids_N,
                       multiple=64).ids_RL.shape[1] == 64
    assert torch.allclose(a, r, atol=1e-5)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_shared_prefix_equals_padded_on_cuda_under_amp():
    """GRPO's CUDA default: fp32 weights, bf16 autocast forward, boolean-mask SDPA, backward."""
    b = rollout_batch(pad_multiple=4)
    m = b.completion_mask_NT.bool().cuda()
    out = []
    for fn in (reference, shared):
        model = tiny_model().cuda().train()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            if fn is reference:
                lp = completion_logprobs(model, b.input_ids_NS.cuda(), b.attention_mask_NS.cuda(), b.completion_len,
                                         chunk_size=64).logp_NT
            else:
                lp = shared(model, b).logp_NT
        lp[m].sum().backward()
        out.append((lp.detach(), model.lm_head.weight.grad.clone()))
    assert (out[0][0][m] - out[1][0][m]).abs().max() < 0.05
    assert torch.allclose(out[0][1], out[1][1], atol=0.05, rtol=0.05)
