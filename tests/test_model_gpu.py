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


@pytest.mark.parametrize("speculative", [False, True])
def test_cuda_graph_decode_matches_eager_on_gpu(speculative):
    """LLM(compile=True): decode step (and, with MTP drafts, the verification step and draft windows) in CUDA graphs
    gives the same greedy tokens as eager decoding; fp32 so that kernel-order rounding cannot flip an argmax."""
    from r1lab.engine import LLM, SamplingParams

    torch.manual_seed(0)
    cfg = DeepSeekV3Config.from_preset("tiny").replace(initializer_range=0.1)
    model = DeepSeekV3ForCausalLM(cfg).cuda().eval()
    prompts = torch.randint(2, cfg.vocab_size, (6, 20)).tolist()
    sp = SamplingParams(temperature=0.0, max_tokens=40, stop_token_ids=[])
    kw = {"speculative_mtp": True, "num_speculative_tokens": 2} if speculative else {}
    eager = LLM(model, max_batch_size=8, **kw).generate(prompt_token_ids=prompts, sampling_params=sp)
    llm = LLM(model, max_batch_size=8, compile=True, **kw)
    graphed = llm.generate(prompt_token_ids=prompts, sampling_params=sp)
    assert llm._runner.compiled  # no fallback to eager
    assert [o.outputs[0].token_ids for o in graphed] == [o.outputs[0].token_ids for o in eager]


def test_grouped_experts_are_deterministic_on_gpu():
    """Two identical forward + backward passes give bitwise-equal losses and gradients (no atomic accumulation in
    the grouped expert path), so a resumed GPU run can retrace an uninterrupted one."""
    torch.manual_seed(0)
    # no MTP module: the last layer's expert gradients then come through matmuls alone (no attention backward,
    # whose kernels may accumulate atomically)
    cfg = DeepSeekV3Config.from_preset("gpu-small").replace(num_hidden_layers=2, vocab_size=1024,
                                                            num_nextn_predict_layers=0)
    model = DeepSeekV3ForCausalLM(cfg).cuda().to(torch.bfloat16)
    ids = torch.randint(0, 1024, (4, 256), device="cuda")
    runs = []
    for _ in range(2):
        model.zero_grad(set_to_none=True)
        out = model(ids, labels=ids)
        out.total_loss(0.0, 1e-4).backward()
        runs.append([out.loss.detach()] + [p.grad.clone() for p in model.moe_layers()[0].experts.parameters()])
    assert all(torch.equal(a, b) for a, b in zip(*runs))


def test_refreshed_sampler_copy_decodes_the_new_weights_under_cuda_graphs():
    """GRPO under amp: the engine decodes a copy that is refreshed in place after each update. Graphs captured before
    the refresh must decode the new weights: same greedy tokens as a fresh engine built on them (fp32 copy here, so
    that rounding cannot flip an argmax; the refresh is the same load_state_dict in any dtype)."""
    from r1lab.engine import LLM, SamplingParams
    from r1lab.rl.grpo import refresh_sampler_copy
    from r1lab.train.models import frozen_copy

    torch.manual_seed(0)
    cfg = DeepSeekV3Config.from_preset("tiny").replace(initializer_range=0.1)
    trained = DeepSeekV3ForCausalLM(cfg).cuda()
    copy = frozen_copy(trained)
    prompts = torch.randint(2, cfg.vocab_size, (4, 16)).tolist()
    sp = SamplingParams(temperature=0.0, max_tokens=24, stop_token_ids=[])
    llm = LLM(copy, max_batch_size=8, compile=True)
    before = [o.outputs[0].token_ids for o in llm.generate(prompt_token_ids=prompts, sampling_params=sp)]
    with torch.no_grad():
        for p in trained.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    refresh_sampler_copy(copy, trained)
    llm.update_weights(copy)
    after = [o.outputs[0].token_ids for o in llm.generate(prompt_token_ids=prompts, sampling_params=sp)]
    fresh = LLM(frozen_copy(trained), max_batch_size=8).generate(prompt_token_ids=prompts, sampling_params=sp)
    assert llm._runner.compiled
    assert after == [o.outputs[0].token_ids for o in fresh] and after != before
