"""Model internals: expert paths, packed masks, gradients, balance loss, bias updates, absorbed MLA, accounting."""

import pytest
import torch

from r1lab.model import ConfigError, DeepSeekV3Config, DeepSeekV3ForCausalLM, model_stats
from r1lab.model.moe import sequence_balance_loss
from r1lab.model.rope import RotaryEmbedding
from r1lab.model.transformer import segment_causal_mask


def tiny(**kw):
    return DeepSeekV3Config.from_preset("tiny").replace(**kw)


def test_loop_and_grouped_experts_agree():
    torch.manual_seed(0)
    model = DeepSeekV3ForCausalLM(tiny(moe_impl="loop")).eval()
    ids = torch.randint(0, 256, (3, 33))
    ref = model(ids).logits
    for m in model.moe_layers():
        m.experts.impl = "grouped"
    fast = model(ids).logits
    assert (ref - fast).abs().max() < 1e-5
    # unaligned dims take the per-segment fallback of the grouped path: still equal
    torch.manual_seed(0)
    odd = DeepSeekV3ForCausalLM(tiny(moe_intermediate_size=13, moe_impl="loop")).eval()
    ref = odd(ids).logits
    for m in odd.moe_layers():
        m.experts.impl = "grouped"
    assert (ref - odd(ids).logits).abs().max() < 1e-5


def test_grouped_path_gradients_match_loop():
    torch.manual_seed(0)
    model = DeepSeekV3ForCausalLM(tiny(moe_impl="loop"))
    ids = torch.randint(0, 256, (2, 16))
    model(ids, labels=ids).loss.backward()
    g_ref = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    for m in model.moe_layers():
        m.experts.impl = "grouped"
    model(ids, labels=ids).loss.backward()
    for n, p in model.named_parameters():
        if n in g_ref:
            assert torch.allclose(p.grad, g_ref[n], atol=1e-6), n


@pytest.mark.parametrize("top_k", [2, 4])
def test_cpu_index_add_combine_equals_the_permutation_combine(monkeypatch, top_k):
    """The grouped path's CPU combine (weighted sorted rows index_add_-ed into their tokens) equals the GPU's way
    (unsort by a permutation, weight, sum over K): bitwise at K = 2 (two terms add the same in either order), within
    float rounding at K = 4; outputs and every gradient."""
    from r1lab.model import moe

    torch.manual_seed(0)
    cfg = tiny(num_experts_per_tok=top_k, n_group=1, topk_group=1)
    layer = moe.MoE(cfg)
    assert layer.experts.impl == "grouped"  # the switch lives in the grouped path
    for p in layer.parameters():
        torch.nn.init.normal_(p, std=0.2)
    x = torch.randn(2, 24, cfg.hidden_size, requires_grad=True)
    g = torch.randn(2, 24, cfg.hidden_size)
    results = {}
    for way in (True, False):
        monkeypatch.setattr(moe, "CPU_INDEX_ADD", way)
        y, _ = layer(x)
        results[way] = (y, *torch.autograd.grad(y, (x, *layer.parameters()), g))
    for a, b in zip(results[True], results[False]):
        if top_k == 2:
            assert torch.equal(a, b)
        else:
            assert (a - b).abs().max() <= 1e-5 * b.abs().max()


def test_packed_documents_equal_separate_runs():
    torch.manual_seed(0)
    model = DeepSeekV3ForCausalLM(tiny()).eval()
    a, b = torch.randint(0, 256, (1, 11)), torch.randint(0, 256, (1, 7))
    packed = torch.cat([a, b, torch.zeros(1, 3, dtype=torch.long)], dim=1)
    doc_ids = torch.tensor([[1] * 11 + [2] * 7 + [0] * 3])
    out = model(packed, doc_ids=doc_ids).logits
    assert (out[:, :11] - model(a).logits).abs().max() < 1e-5
    assert (out[:, 11:18] - model(b).logits).abs().max() < 1e-5
    # the loss of the packed row equals the token-weighted loss of the two documents, MTP included
    o = model(packed, labels=packed, doc_ids=doc_ids)
    oa, ob = model(a, labels=a), model(b, labels=b)
    assert torch.allclose(o.loss, (oa.loss * 10 + ob.loss * 6) / 16, atol=1e-5)
    assert torch.allclose(o.mtp_loss, (oa.mtp_loss * 9 + ob.mtp_loss * 5) / 14, atol=1e-5)


def test_mask_never_empty_and_causal():
    m = segment_causal_mask(torch.tensor([[0, 1, 1, 2]]))[0, 0]
    assert m.tolist() == [[True, False, False, False], [False, True, False, False],
                          [False, True, True, False], [False, False, False, True]]


def test_gradients_reach_every_parameter_including_mtp():
    torch.manual_seed(0)
    model = DeepSeekV3ForCausalLM(tiny(num_nextn_predict_layers=2))
    ids = torch.randint(0, 256, (4, 24))
    out = model(ids, labels=ids)
    out.total_loss(0.3, 1e-2).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert missing == []
    assert any(n.startswith("model.mtp.1.") for n, _ in model.named_parameters())


def test_balance_loss_matches_direct_formula():
    s = torch.tensor([[[0.9, 0.2, 0.4, 0.1], [0.3, 0.8, 0.5, 0.6], [0.7, 0.1, 0.9, 0.2]]])
    idx = torch.tensor([[[0, 2], [1, 3], [2, 0]]])
    n_r, k_r, t = 4, 2, 3
    direct = 0.0
    for i in range(n_r):
        f = n_r / (k_r * t) * sum(int(i in idx[0, tt].tolist()) for tt in range(t))
        p = sum(float(s[0, tt, i] / s[0, tt].sum()) for tt in range(t)) / t
        direct += f * p
    assert abs(float(sequence_balance_loss(s, idx)) - direct) < 1e-6
    # per sequence, then averaged: a second, different sequence changes the mean accordingly
    s2, idx2 = torch.cat([s, s.flip(-1)]), torch.cat([idx, 3 - idx])
    assert abs(float(sequence_balance_loss(s2, idx2)) - direct) < 1e-6


def test_bias_update_moves_skewed_router_toward_balance():
    torch.manual_seed(0)
    cfg = tiny(n_group=1, topk_group=1, num_experts_per_tok=1)
    model = DeepSeekV3ForCausalLM(cfg).train()
    moe = model.moe_layers()[0]
    with torch.no_grad():
        moe.gate.weight.normal_(0, 0.05)
        moe.gate.weight[0] += 0.05  # with positive-mean inputs this router sends most tokens to expert 0
    x = torch.randn(1, 512, cfg.hidden_size) + 1.0
    ratios = []
    for _ in range(100):
        moe(x)
        ratios.append(moe.update_bias(gamma=0.01)["load_max_over_mean"])
    assert ratios[0] > 4.0
    assert ratios[-1] < 0.5 * ratios[0]
    assert moe.gate.e_score_correction_bias.dtype == torch.float32
    # γ = 0 never moves the bias
    before = moe.gate.e_score_correction_bias.clone()
    moe(x)
    moe.update_bias(0.0)
    assert torch.equal(before, moe.gate.e_score_correction_bias)


def test_bias_counts_and_rope_frequencies_stay_fp32_under_dtype_casts():
    fresh = DeepSeekV3ForCausalLM(tiny())
    model = DeepSeekV3ForCausalLM(tiny()).to(torch.bfloat16)
    assert model.model.embed_tokens.weight.dtype == torch.bfloat16
    assert all(m.gate.e_score_correction_bias.dtype == torch.float32 for m in model.moe_layers())
    assert all(m.tokens_per_expert.dtype == torch.float32 for m in model.moe_layers())
    assert torch.equal(model.model.rotary.inv_freq, fresh.model.rotary.inv_freq)  # values kept, not rounded
    m = model.moe_layers()[0]
    m.tokens_per_expert += 300
    m.tokens_per_expert += 1
    assert m.tokens_per_expert[0].item() == 301  # a bf16 count would stay at 300


def test_router_scores_fp32_under_bf16_autocast():
    from r1lab.model.moe import Router

    torch.manual_seed(0)
    router = Router(DeepSeekV3Config.from_preset("tiny"))
    torch.nn.init.normal_(router.weight, std=0.02)
    x = torch.randn(64, router.weight.shape[1])
    w_ref, i_ref, s_ref = router(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        w, i, s = router(x)
    assert s.dtype == w.dtype == torch.float32
    assert torch.equal(i, i_ref) and torch.equal(s, s_ref) and torch.equal(w, w_ref)


def test_absorbed_attention_equals_naive():
    torch.manual_seed(0)
    cfg = tiny(rope_parameters={"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 16,
                                "mscale": 1.0, "mscale_all_dim": 1.0})
    model = DeepSeekV3ForCausalLM(cfg).eval()
    attn = model.model.layers[0].self_attn
    x = torch.randn(2, 9, cfg.hidden_size)
    pos = torch.arange(9).expand(2, 9)
    cos, sin = RotaryEmbedding(cfg)(pos, x.dtype)
    naive = attn(x, cos, sin)
    q_nope, q_pe = attn.queries(x, cos, sin)
    c_kv, k_pe = attn.latents(x, cos, sin)
    mask = torch.ones(9, 9, dtype=torch.bool).tril()[None, None]
    absorbed = attn.attend_absorbed(q_nope, q_pe, torch.cat([c_kv, k_pe], dim=-1), mask)
    assert (naive - absorbed).abs().max() < 1e-5


@pytest.mark.parametrize("masked", [False, True])
def test_cpu_padded_value_attention_equals_explicit_softmax(masked):
    """``mla.sdpa`` pads V to the query width on the CPU (flash kernel); output and gradients equal a written-out
    softmax(q·kᵀ·scale + mask)·v, with packed-document masks and causal-only."""
    from r1lab.model.mla import sdpa

    torch.manual_seed(0)
    b, h, t, qd, vd = 2, 3, 11, 12, 8
    q, k, v = (torch.randn(b, h, t, d, dtype=torch.float64, requires_grad=True) for d in (qd, qd, vd))
    segments = torch.tensor([[1] * 4 + [2] * 7, [1] * 9 + [0] * 2])
    mask = segment_causal_mask(segments) if masked else torch.ones(t, t, dtype=torch.bool).tril()[None, None]
    out = sdpa(q, k, v, mask if masked else None, 0.3)
    assert out.shape == (b, h, t, vd)
    scores = (q @ k.transpose(-1, -2) * 0.3).masked_fill(~mask, float("-inf"))
    ref = scores.softmax(-1) @ v
    g = torch.randn_like(ref)
    grads = torch.autograd.grad(out, (q, k, v), g)
    grads_ref = torch.autograd.grad(ref, (q, k, v), g)
    assert (out - ref).abs().max() < 1e-10
    assert all((a - r).abs().max() < 1e-10 for a, r in zip(grads, grads_ref))


def test_cpu_training_attention_takes_the_flash_kernel():
    """The point of the padding: an MLA forward on the CPU (V narrower than Q/K) runs PyTorch's CPU flash kernel, not
    the math path's batched matmuls."""
    from torch.profiler import profile

    cfg = tiny()
    assert cfg.v_head_dim < cfg.qk_head_dim
    model = DeepSeekV3ForCausalLM(cfg)
    ids = torch.randint(0, cfg.vocab_size, (2, 12))
    with profile() as prof:
        model(ids, labels=ids, doc_ids=torch.tensor([[1] * 5 + [2] * 7, [1] * 12]))
    names = {e.key for e in prof.key_averages()}
    assert any("flash_attention" in n for n in names), sorted(n for n in names if "attention" in n)


def test_mtp_logits_returned():
    model = DeepSeekV3ForCausalLM(tiny(num_nextn_predict_layers=2)).eval()
    out = model(torch.randint(0, 256, (1, 8)), return_mtp_logits=True)
    assert len(out.mtp_logits) == 2 and out.mtp_logits[0].shape == out.logits.shape


def test_deepseek_v3_parameter_counts():
    stats = model_stats(DeepSeekV3Config.from_preset("deepseek-v3"))
    assert abs(stats.total_params / 671e9 - 1) < 0.01
    # 36.63B: one embedding row + head + 8 of 256 experts; the report's "37B" is rounded (-1.01%).
    assert abs(stats.active_params / 37e9 - 1) < 0.011
    assert 11e9 < stats.mtp_params < 12e9  # counted apart (hub's 14B also holds embedding/head copies)
    assert stats.kv_bytes_per_token_expanded / stats.kv_bytes_per_token_latent > 70


def test_deepseek_v3_builds_on_meta_and_matches_count():
    cfg = DeepSeekV3Config.from_preset("deepseek-v3").replace(num_nextn_predict_layers=0)
    with torch.device("meta"):
        model = DeepSeekV3ForCausalLM(cfg, init_weights=False)
    n = sum(p.numel() for p in model.parameters())
    assert n == model_stats(cfg).total_params


def test_tiny_is_under_one_million():
    assert model_stats(DeepSeekV3Config.from_preset("tiny")).total_params < 1_000_000


@pytest.mark.parametrize("field,value,fragment", [
    ("num_experts_per_tok", 9, "num_experts_per_tok"),
    ("n_group", 3, "n_group"),
    ("topk_group", 3, "topk_group"),
    ("q_lora_rank", 0, "q_lora_rank"),
    ("scoring_func", "relu", "scoring_func"),
    ("n_group", None, "n_group"),
    ("num_experts_per_tok", "2", "num_experts_per_tok"),
    ("moe_intermediate_size", None, "moe_intermediate_size"),
    ("n_routed_experts", -8, "n_routed_experts"),
    ("n_shared_experts", -1, "n_shared_experts"),
    ("rms_norm_eps", -1.0, "rms_norm_eps"),
    ("max_position_embeddings", 0, "max_position_embeddings"),
    ("rope_theta", "1e4", "rope_theta"),
])
def test_inconsistent_config_names_the_field(field, value, fragment):
    with pytest.raises(ConfigError, match=fragment):
        tiny(**{field: value})


def test_unknown_model_type_and_preset(tmp_path):
    (tmp_path / "config.json").write_text('{"model_type": "llama"}')
    with pytest.raises(ConfigError, match="model_type"):
        DeepSeekV3Config.from_pretrained(tmp_path)
    with pytest.raises(ConfigError, match="unknown preset"):
        DeepSeekV3Config.from_preset("nope")
    with pytest.raises(ConfigError, match="no such model directory"):
        DeepSeekV3Config.from_pretrained(tmp_path / "missing")
    (tmp_path / "config.json").write_text('{"model_type": "deepseek_v3",\n "hidden_size": }')
    with pytest.raises(ConfigError, match=r"config.json:2"):
        DeepSeekV3Config.from_pretrained(tmp_path)


def test_config_roundtrip_and_legacy_rope_scaling(tmp_path):
    cfg = tiny(rope_parameters={"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 16})
    cfg.save_pretrained(tmp_path)
    again = DeepSeekV3Config.from_pretrained(tmp_path)
    assert again == cfg
    legacy = cfg.to_dict()
    legacy.pop("rope_parameters")
    legacy["rope_scaling"] = {"type": "yarn", "factor": 4.0, "original_max_position_embeddings": 16}
    assert DeepSeekV3Config.from_dict(legacy).rope_parameters["rope_type"] == "yarn"


def test_a_config_json_without_rope_scaling_means_plain_rope_as_in_transformers():
    """transformers 4 writes "rope_scaling": null when there is none; a file may also leave every rope key out. Both
    mean plain RoPE (and 4,096 positions when unsaid) in transformers, so they must here too."""
    from transformers import DeepseekV3Config as HFConfig

    base = {k: v for k, v in tiny().to_dict().items() if k not in ("rope_parameters", "rope_scaling",
                                                                   "max_position_embeddings")}
    for extra in ({}, {"rope_scaling": None}):
        ours = DeepSeekV3Config.from_dict({**base, **extra})
        theirs = HFConfig(**{**base, **extra})
        assert ours.rope_parameters == {"rope_type": "default"}
        assert theirs.rope_parameters["rope_type"] == "default"
        assert ours.max_position_embeddings == theirs.max_position_embeddings == 4096
