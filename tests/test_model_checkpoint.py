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


def test_every_bad_expert_tensor_is_listed_with_the_folder(tmp_path):
    """Missing, mis-shaped and surplus expert tensors (MTP layer included) and other missing tensors: one error that
    lists each by its checkpoint name, not a crash inside the stacking."""
    model = _model(num_nextn_predict_layers=1)
    model.save_pretrained(tmp_path)
    n_main = model.config.num_hidden_layers
    sd = load_file(tmp_path / "model.safetensors")
    del sd["model.layers.1.mlp.experts.3.up_proj.weight"]
    del sd["model.layers.0.self_attn.o_proj.weight"]
    sd["model.layers.1.mlp.experts.2.gate_proj.weight"] = torch.zeros(5, 3)
    sd["model.layers.1.mlp.experts.99.gate_proj.weight"] = torch.zeros(5, 3)
    sd[f"model.layers.{n_main}.mlp.experts.0.down_proj.weight"] = torch.zeros(2, 2)
    save_file(sd, tmp_path / "model.safetensors")
    with pytest.raises(CheckpointError) as err:
        DeepSeekV3ForCausalLM.from_pretrained(tmp_path)
    text = str(err.value)
    assert text.startswith(str(tmp_path))
    d, i = model.config.hidden_size, model.config.moe_intermediate_size
    for line in ["missing: model.layers.1.mlp.experts.3.up_proj.weight",
                 f"mis-shaped: model.layers.1.mlp.experts.2.gate_proj.weight expected {(i, d)} got (5, 3)",
                 "unexpected: model.layers.1.mlp.experts.99.gate_proj.weight",
                 f"mis-shaped: model.layers.{n_main}.mlp.experts.0.down_proj.weight expected {(d, i)} got (2, 2)",
                 "missing: model.layers.0.self_attn.o_proj.weight"]:
        assert line in text, line
    assert "gate_up_proj" not in text  # our stacked names are not what the user's file holds


def test_a_layer_without_experts_is_named_in_checkpoint_terms(tmp_path):
    model = _model()
    model.save_pretrained(tmp_path)
    sd = {k: v for k, v in load_file(tmp_path / "model.safetensors").items()
          if not k.startswith("model.layers.1.mlp.experts.")}
    save_file(sd, tmp_path / "model.safetensors")
    with pytest.raises(CheckpointError, match=r"missing: model\.layers\.1\.mlp\.experts\.\{0\.\.7\}"):
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


def test_save_pretrained_fp8_writes_deepseeks_format_and_loads_back(tmp_path):
    """save_pretrained(fp8=True): e4m3 linear weights + fp32 weight_scale_inv, the rest as stored, the release's
    quantization_config in config.json; loading dequantises into the stored dtype and drops quantization_config."""
    from r1lab.fp8 import dequantize_fp8_weight

    model = _model(num_nextn_predict_layers=1)
    model.save_pretrained(tmp_path, fp8=True)
    sd = load_file(tmp_path / "model.safetensors")
    scaled = sorted(k[: -len("_scale_inv")] for k in sd if k.endswith("weight_scale_inv"))
    assert scaled and all(sd[k].dtype == torch.float8_e4m3fn for k in scaled)
    assert all(sd[k + "_scale_inv"].dtype == torch.float32 for k in scaled)
    assert "model.layers.0.self_attn.q_a_proj.weight" in scaled and "model.layers.1.mlp.experts.0.down_proj.weight" in scaled
    for kept in ["model.embed_tokens.weight", "lm_head.weight", "model.layers.1.mlp.gate.weight", "model.norm.weight"]:
        assert sd[kept].dtype == torch.float32, kept
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["quantization_config"] == {"activation_scheme": "dynamic", "fmt": "e4m3", "quant_method": "fp8",
                                             "weight_block_size": [128, 128]}
    again = DeepSeekV3ForCausalLM.from_pretrained(tmp_path)
    assert again.config.quantization_config is None and again.lm_head.weight.dtype == torch.float32
    name = "model.layers.1.mlp.experts.2.up_proj.weight"
    expected = dequantize_fp8_weight(sd[name], sd[name + "_scale_inv"], torch.float32)
    i = model.config.moe_intermediate_size
    assert torch.equal(again.model.layers[1].mlp.experts.gate_up_proj[2, i:], expected)
    again.save_pretrained(tmp_path / "plain")
    assert "quantization_config" not in json.loads((tmp_path / "plain" / "config.json").read_text())
