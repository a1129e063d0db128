"""The dense runner (Llama-family transformers models on the engine's own K/V cache) against transformers' forward:
every step's logits, greedy tokens and log-probs, continuous batching, traced decode, and the fallback rule."""

import pytest
import torch

from r1lab.engine import LLM, SamplingParams
from r1lab.engine.dense import DenseRunner, unsupported_reason

transformers = pytest.importorskip("transformers")

pytestmark = pytest.mark.usefixtures("one_thread")

PROMPTS = [[5, 6, 7, 8, 9], [11, 12], [30, 31, 32, 33, 34, 35, 36, 37], [40], [50, 51, 52]]


def _randomise(model):
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.2) if p.dim() > 1 else p.uniform_(0.5, 1.5) if p.dim() == 1 and p.numel() > 0 else None
    return model.eval()


def _qwen2(**kw):
    cfg = transformers.Qwen2Config(vocab_size=96, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                                   eos_token_id=95, bos_token_id=94, tie_word_embeddings=False, **kw)
    torch.manual_seed(0)
    return _randomise(transformers.Qwen2ForCausalLM(cfg))


def _llama():
    cfg = transformers.LlamaConfig(vocab_size=96, hidden_size=48, intermediate_size=64, num_hidden_layers=3,
                                   num_attention_heads=6, num_key_value_heads=2, max_position_embeddings=128,
                                   tie_word_embeddings=True, rope_theta=500.0)
    torch.manual_seed(0)
    return _randomise(transformers.LlamaForCausalLM(cfg))


def _qwen3():
    cfg = transformers.Qwen3Config(vocab_size=96, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                                   max_position_embeddings=128, tie_word_embeddings=False)
    torch.manual_seed(0)
    return _randomise(transformers.Qwen3ForCausalLM(cfg))


MODELS = {"qwen2": _qwen2, "llama": _llama, "qwen3": _qwen3}


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("all_slots", [False, True])  # gathered cache rows, or the batch in slot order over the cache
def test_every_step_equals_transformers_forward(name, all_slots):
    """Prefill + 12 cached decode steps per row (prompts of different lengths, batched): the logits of every step
    equal transformers' full forward over the whole sequence within 1e-5 (fp32)."""
    model = MODELS[name]()
    llm = LLM(model, device="cpu", max_batch_size=len(PROMPTS))
    assert isinstance(llm._runner, DenseRunner)
    runner = llm._runner
    slots = [3, 0, 4, 1, 2]  # every slot once, not in order
    logits = runner.prefill(PROMPTS, slots)
    seqs = [list(p) for p in PROMPTS]
    for step in range(12):
        for i, seq in enumerate(seqs):
            with torch.no_grad():
                ref = model(torch.tensor([seq])).logits[0, -1].float()
            torch.testing.assert_close(logits[i], ref, atol=1e-5, rtol=1e-5, msg=f"{name} step {step} row {i}")
        nxt = logits.argmax(-1)
        starts = torch.tensor([len(s) for s in seqs])
        for s, t in zip(seqs, nxt.tolist()):
            s.append(t)
        kv_len = runner.kv_bucket(max(len(s) for s in seqs))
        logits = runner.decode(nxt[:, None], starts, torch.tensor(slots), kv_len, all_slots)[:, 0]


@pytest.mark.parametrize("hf_backend", [False, True])
def test_greedy_and_logprobs_equal_reference_path(hf_backend):
    """More prompts than slots (continuous batching), n = 2 samples sharing one prefill: the dense runner and the
    reference path (transformers' own forward and cache) give the same greedy tokens and log-probs."""
    model = _qwen2()
    llm = LLM(model, device="cpu", max_batch_size=3, hf_backend=hf_backend)
    assert (llm._runner is None) == hf_backend
    sp = SamplingParams(n=2, temperature=0, max_tokens=10, stop_token_ids=[])
    outs = llm.generate(prompt_token_ids=PROMPTS, sampling_params=sp)
    for p, out in zip(PROMPTS, outs):
        ids = out.outputs[0].token_ids
        assert ids == out.outputs[1].token_ids and len(ids) == 10
        with torch.no_grad():
            logits = model(torch.tensor([p + ids])).logits[0].float()
        assert ids == logits[len(p) - 1: -1].argmax(-1).tolist()
        lp = torch.log_softmax(logits, -1)[len(p) - 1: -1].gather(-1, torch.tensor(ids)[:, None])[:, 0]
        torch.testing.assert_close(torch.tensor(out.outputs[0].logprobs), lp, atol=1e-5, rtol=0)


def test_traced_decode_matches_eager():
    """The decode step traced whole by dynamo (fullgraph: no host sync inside; the eager backend stands in for CUDA
    graphs on CPU) gives the eager tokens, also while sampling with a seed."""
    model = _llama()
    for sp in (SamplingParams(temperature=0, max_tokens=12, stop_token_ids=[]),
               SamplingParams(temperature=1.0, max_tokens=12, stop_token_ids=[], seed=3)):
        ref = LLM(model, device="cpu", max_batch_size=4).generate(prompt_token_ids=PROMPTS, sampling_params=sp)
        llm = LLM(model, device="cpu", max_batch_size=4, compile={"backend": "eager", "fullgraph": True})
        out = llm.generate(prompt_token_ids=PROMPTS, sampling_params=sp)
        assert llm._runner.compiled
        assert [o.outputs[0].token_ids for o in out] == [o.outputs[0].token_ids for o in ref]


def test_unsupported_models_take_the_reference_path():
    slide = _qwen2(use_sliding_window=True, sliding_window=4, max_window_layers=0)
    assert "sliding" in unsupported_reason(slide)
    llm = LLM(slide, device="cpu")
    assert llm._runner is None
    # no stop ids and a seed: an unseeded draw of the EOS id (1 in 96 per token) made this flaky
    sp = SamplingParams(max_tokens=3, stop_token_ids=[], seed=0)
    assert len(llm.generate(prompt_token_ids=[[5, 6]], sampling_params=sp)[0].outputs[0].token_ids) == 3
    gpt2 = transformers.GPT2LMHeadModel(transformers.GPT2Config(vocab_size=64, n_embd=16, n_layer=1, n_head=2))
    assert "model_type 'gpt2'" in unsupported_reason(gpt2)


def test_update_weights_with_a_new_module_rebuilds_the_runner():
    a, b = _qwen2(), _qwen2()
    with torch.no_grad():
        for p in b.parameters():
            p.mul_(-1.0)
    sp = SamplingParams(temperature=0, max_tokens=6, stop_token_ids=[])
    llm = LLM(a, device="cpu")
    llm.update_weights(b)
    got = llm.generate(prompt_token_ids=PROMPTS, sampling_params=sp)
    want = LLM(b, device="cpu").generate(prompt_token_ids=PROMPTS, sampling_params=sp)
    assert [o.outputs[0].token_ids for o in got] == [o.outputs[0].token_ids for o in want]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_graph_decode_matches_eager_on_gpu():
    """compile=True on a GPU (CUDA graphs): the same greedy tokens as eager decoding (fp32, so kernel-order rounding
    cannot flip an argmax)."""
    model = _llama().cuda()
    sp = SamplingParams(temperature=0, max_tokens=24, stop_token_ids=[])
    eager = LLM(model, max_batch_size=8).generate(prompt_token_ids=PROMPTS, sampling_params=sp)
    llm = LLM(model, max_batch_size=8, compile=True)
    graphed = llm.generate(prompt_token_ids=PROMPTS, sampling_params=sp)
    assert llm._runner.compiled
    assert [o.outputs[0].token_ids for o in graphed] == [o.outputs[0].token_ids for o in eager]
