"""Logits parity with transformers' DeepseekV3ForCausalLM (fp32, CPU, random weights), both load directions."""

import logging

import pytest
import torch
from transformers import DeepseekV3Config as HFConfig
from transformers import DeepseekV3ForCausalLM as HFModel

from r1lab.model import DeepSeekV3Config, DeepSeekV3ForCausalLM

YARN = {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 16, "beta_fast": 32.0,
        "beta_slow": 1.0, "mscale": 1.0, "mscale_all_dim": 1.0}


def tiny(**kw) -> DeepSeekV3Config:
    base = dict(vocab_size=97, hidden_size=32, intermediate_size=48, moe_intermediate_size=16, num_hidden_layers=3,
                num_attention_heads=4, q_lora_rank=24, kv_lora_rank=16, qk_nope_head_dim=8, qk_rope_head_dim=4,
                v_head_dim=12, n_routed_experts=8, n_shared_experts=1, num_experts_per_tok=3, n_group=4,
                topk_group=2, first_k_dense_replace=1, num_nextn_predict_layers=1, max_position_embeddings=64,
                rope_parameters={"rope_type": "default"}, routed_scaling_factor=2.5)
    base.update(kw)
    return DeepSeekV3Config(**base)


CASES = {
    "q_lora": {},
    "direct_q": {"q_lora_rank": None},
    "yarn": {"rope_parameters": YARN},
    "one_group": {"n_group": 1, "topk_group": 1},
    "all_moe": {"first_k_dense_replace": 0},
    "dense_first_two": {"first_k_dense_replace": 2},
}


def _randomise_bias(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if hasattr(m, "e_score_correction_bias"):
            m.e_score_correction_bias.copy_(torch.randn(m.e_score_correction_bias.shape, generator=g) * 0.3)


@pytest.mark.parametrize("case", sorted(CASES))
def test_ours_to_transformers(case, tmp_path):
    torch.manual_seed(0)
    ours = DeepSeekV3ForCausalLM(tiny(**CASES[case])).eval()
    with torch.no_grad():
        _randomise_bias(ours)
    ours.save_pretrained(tmp_path)
    theirs = HFModel.from_pretrained(tmp_path, dtype=torch.float32).eval()
    ids = torch.randint(0, 97, (2, 40), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        a = ours(ids).logits
        b = theirs(ids).logits
    assert (a - b).abs().max().item() < 1e-4


@pytest.mark.parametrize("case", sorted(CASES))
def test_transformers_to_ours(case, tmp_path, caplog):
    torch.manual_seed(0)
    cfg = tiny(**CASES[case]).to_dict()
    hf_cfg = HFConfig(**{k: v for k, v in cfg.items() if k in HFConfig.__dataclass_fields__ or k == "rope_parameters"})
    theirs = HFModel(hf_cfg).eval()
    with torch.no_grad():
        _randomise_bias(theirs, seed=3)
        for m in theirs.modules():  # transformers initialises norms to 1 and experts like matrices: perturb norms
            if m.__class__.__name__.endswith("RMSNorm"):
                m.weight.add_(torch.randn_like(m.weight) * 0.1)
    theirs.save_pretrained(tmp_path)
    with caplog.at_level(logging.WARNING):
        ours = DeepSeekV3ForCausalLM.from_pretrained(tmp_path).eval()
    assert "no MTP tensors" in caplog.text  # transformers drops MTP weights; we load without MTP and say so
    assert ours.config.num_nextn_predict_layers == 0
    ids = torch.randint(0, 97, (2, 40), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        a = ours(ids).logits
        b = theirs(ids).logits
    assert (a - b).abs().max().item() < 1e-4
