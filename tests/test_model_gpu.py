"""GPU checks of the model (run on a CUDA machine: python -m pytest -m gpu tests/test_model_gpu.py)."""

import pytest
import torch

from r1lab.model import DeepSeekV3Config, DeepSeekV3ForCausalLM

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


def test_grouped_mm_bf16_matches_loop_on_gpu():
    torch.manual_seed(0)
    cfg = DeepSeekV3Config.from_preset("gpu-small").replace(num_hidden_layers=2, vocab_size=1024, moe_impl="loop")
    model = DeepSeekV3ForCausalLM(cfg).cuda().to(torch.bfloat16)
    ids = torch.randint(0, 1024, (4, 256), device="cuda")
    with torch.no_grad():
        ref = model(ids).logits.float()
        for m in model.moe_layers():
            m.experts.impl = "grouped"
        fast = model(ids).logits.float()
    rel = (ref - fast).norm() / ref.norm()
    assert rel < 2e-2, rel  # bf16 accumulation-order differences only


def test_grouped_mm_backward_on_gpu():
    torch.manual_seed(0)
    cfg = DeepSeekV3Config.from_preset("gpu-small").replace(num_hidden_layers=2, vocab_size=1024)
    model = DeepSeekV3ForCausalLM(cfg).cuda()
    ids = torch.randint(0, 1024, (2, 128), device="cuda")
    with torch.autocast("cuda", dtype=torch.bfloat16):
        out = model(ids, labels=ids)
    out.total_loss(0.3, 1e-4).backward()
    assert all(p.grad is not None for p in model.parameters())
