"""Checkpoints: hub names, sharding, MTP layout, errors for missing / mis-shaped tensors, dtype handling."""

import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from r1lab.model import CheckpointError, DeepSeekV3Config, DeepSeekV3ForCausalLM


def _model(**kw):
    torch.manual_seed(0)
    return DeepSeekV3ForCausalLM(DeepSeekV3Config.from_preset("tiny").replace(**kw)).eval()


def test_roundtrip_with_mtp_and_hub_names(tmp_path):
    model = _model(num_nextn_predict_layers=2)
    with torch.no_grad():
        model.moe_layers()[0].gate.e_score_correction_bias.normal_()
    model.save_pretrained(tmp_path)
    keys = set(load_file(tmp_path / "model.safetensors"))
    n = model.config.num_hidden_layers
    assert f"model.layers.{n}.eh_proj.weight" in keys and f"model.layers.{n + 1}.shared_head.head.weight" in keys
    assert f"model.layers.{n}.embed_tokens.weight" in keys
    assert "model.layers.1.mlp.experts.7.gate_proj.weight" in keys
    assert not any("gate_up_proj" in k or ".mtp." in k for k in keys)
    again = DeepSeekV3ForCausalLM.from_pretrained(tmp_path).eval()
    ids = torch.randint(0, 256, (2, 12))
    a = model(ids, return_mtp_logits=True)
    b = again(ids, return_mtp_logits=True)
    assert torch.equal(a.logits, b.logits)
    assert all(torch.equal(x, y) for x, y in zip(a.mtp_logits, b.mtp_logits))


def test_sharded_save_writes_index(tmp_path):
    model = _model()
    model.save_pretrained(tmp_path, max_shard_size="20KB")
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    shards = set(index["weight_map"].values())
    assert len(shards) > 1 and all((tmp_path / s).is_file() for s in shards)
    again = DeepSeekV3ForCausalLM.from_pretrained(tmp_path)
    ids = torch.randint(0, 256, (1, 9))
    assert torch.equal(model(ids).logits, again.eval()(ids).logits)


def test_bf16_save_and_load(tmp_path):
    model = _model()
    model.save_pretrained(tmp_path, dtype=torch.bfloat16)
    with safe_open(str(tmp_path / "model.safetensors"), "pt") as f:
        assert f.get_tensor("model.norm.weight").dtype == torch.bfloat16
        assert f.get_tensor("model.layers.1.mlp.gate.e_score_correction_bias").dtype == torch.float32
    again = DeepSeekV3ForCausalLM.from_pretrained(tmp_path)
    assert again.lm_head.weight.dtype == torch.bfloat16
    assert again.moe_layers()[0].gate.e_score_correction_bias.dtype == torch.float32


def test_missing_and_misshaped_tensors_are_listed(tmp_path):
    model = _model()
    model.save_pretrained(tmp_path)
    sd = load_file(tmp_path / "model.safetensors")
    del sd["model.layers.0.self_attn.o_proj.weight"]
    sd["model.norm.weight"] = torch.ones(5)
    save_file(sd, tmp_path / "model.safetensors")
    with pytest.raises(CheckpointError) as err:
        DeepSeekV3ForCausalLM.from_pretrained(tmp_path)
    assert "missing: model.layers.0.self_attn.o_proj.weight" in str(err.value)
    assert "mis-shaped: model.norm.weight" in str(err.value)


def test_missing_expert_is_an_error(tmp_path):
    model = _model()
    model.save_pretrained(tmp_path)
    sd = load_file(tmp_path / "model.safetensors")
    del sd["model.layers.1.mlp.experts.3.up_proj.weight"]
    save_file(sd, tmp_path / "model.safetensors")
    with pytest.raises(CheckpointError, match="experts.3.up_proj"):
        DeepSeekV3ForCausalLM.from_pretrained(tmp_path)


def test_no_weights_is_an_error(tmp_path):
    _model().config.save_pretrained(tmp_path)
    with pytest.raises(CheckpointError, match="no \\*.safetensors"):
        DeepSeekV3ForCausalLM.from_pretrained(tmp_path)


def test_tied_embeddings_roundtrip(tmp_path):
    model = _model(tie_word_embeddings=True)
    assert model.lm_head.weight is model.model.embed_tokens.weight
    model.save_pretrained(tmp_path)
    again = DeepSeekV3ForCausalLM.from_pretrained(tmp_path)
    assert again.lm_head.weight is again.model.embed_tokens.weight
    ids = torch.randint(0, 256, (1, 9))
    assert torch.equal(model(ids).logits, again.eval()(ids).logits)


def test_fp8_checkpoint_dequantises_on_load(tmp_path):
    from r1lab.fp8 import dequantize_fp8_weight, quantize_state_dict

    model = _model()
    model.save_pretrained(tmp_path)
    sd = load_file(tmp_path / "model.safetensors")
    q = quantize_state_dict(sd)
    name = "model.layers.1.mlp.experts.2.up_proj.weight"
    assert q[name].dtype == torch.float8_e4m3fn and name + "_scale_inv" in q
    assert q["model.embed_tokens.weight"].dtype == torch.float32  # embeddings stay in high precision
    save_file(q, tmp_path / "model.safetensors")
    again = DeepSeekV3ForCausalLM.from_pretrained(tmp_path, dtype=torch.float32)
    expected = dequantize_fp8_weight(q[name], q[name + "_scale_inv"], torch.float32)
    assert torch.equal(again.model.layers[1].mlp.experts.gate_up_proj[2, 16:], expected)
    ids = torch.randint(0, 256, (1, 9))
    rel = (again.eval()(ids).logits - model(ids).logits).norm() / model(ids).logits.norm()
    assert rel < 0.1  # e4m3 weights: a few percent off, never garbage
