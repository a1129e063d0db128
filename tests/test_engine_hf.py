"""Transformers models in the engine — the dense runner (default for Llama-family models) and the reference path
(``hf_backend=True``): a tiny Qwen2 built from a config, saved and loaded by directory; greedy equals transformers'
own greedy generate, logprobs equal the forward's log-softmax."""

import pytest
import torch

from r1lab.engine import LLM, SamplingParams

transformers = pytest.importorskip("transformers")


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def qwen_dir(tmp_path_factory):
    cfg = transformers.Qwen2Config(vocab_size=96, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                                   eos_token_id=95, bos_token_id=94, tie_word_embeddings=False)
    torch.manual_seed(0)
    model = transformers.Qwen2ForCausalLM(cfg)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1:
                p.normal_(0, 0.2)
    d = tmp_path_factory.mktemp("qwen")
    model.save_pretrained(d)
    return d


PROMPTS = [[5, 6, 7, 8, 9], [11, 12], [30, 31, 32, 33, 34, 35, 36, 37], [40]]


@pytest.mark.parametrize("hf_backend", [False, True])
def test_hf_greedy_equals_transformers_generate(qwen_dir, hf_backend):
    # 4 prompts, 3 slots: continuous batching (dense runner) / two batches with left padding (reference path)
    llm = LLM(str(qwen_dir), device="cpu", max_batch_size=3, hf_backend=hf_backend)
    assert not llm.is_deepseek and (llm._runner is None) == hf_backend
    outs = llm.generate(prompt_token_ids=PROMPTS,
                        sampling_params=SamplingParams(temperature=0, max_tokens=10, stop_token_ids=[]))
    ref_model = transformers.AutoModelForCausalLM.from_pretrained(str(qwen_dir)).eval()
    for p, out in zip(PROMPTS, outs):
        with torch.no_grad():
            ref = ref_model.generate(torch.tensor([p]), attention_mask=torch.ones(1, len(p), dtype=torch.long),
                                     do_sample=False, max_new_tokens=10, min_new_tokens=10, eos_token_id=None,
                                     pad_token_id=0)[0, len(p):].tolist()
        assert out.outputs[0].token_ids == ref
        ids = p + ref
        with torch.no_grad():
            logits = ref_model(torch.tensor([ids])).logits[0].float()
        lp = torch.log_softmax(logits, -1)[len(p) - 1: -1].gather(-1, torch.tensor(ref)[:, None])[:, 0]
        assert torch.allclose(torch.tensor(out.outputs[0].logprobs), lp, atol=1e-5)


@pytest.mark.parametrize("hf_backend", [False, True])
def test_hf_sampling_stops_and_validates(qwen_dir, hf_backend):
    model = transformers.AutoModelForCausalLM.from_pretrained(str(qwen_dir)).eval()
    llm = LLM(model, device="cpu", hf_backend=hf_backend)
    free = llm.generate(prompt_token_ids=[PROMPTS[0]],
                        sampling_params=SamplingParams(n=3, max_tokens=8, seed=1, stop_token_ids=[]))[0]
    assert [len(c.token_ids) for c in free.outputs] == [8, 8, 8]
    assert all(c.finish_reason == "length" for c in free.outputs)
    again = llm.generate(prompt_token_ids=[PROMPTS[0]],
                         sampling_params=SamplingParams(n=3, max_tokens=8, seed=1, stop_token_ids=[]))[0]
    assert [c.token_ids for c in again.outputs] == [c.token_ids for c in free.outputs]
    stop = free.outputs[0].token_ids[3]
    cut = llm.generate(prompt_token_ids=[PROMPTS[0]],
                       sampling_params=SamplingParams(max_tokens=8, seed=1, stop_token_ids=[stop]))[0].outputs[0]
    first = free.outputs[0].token_ids.index(stop)
    assert cut.token_ids == free.outputs[0].token_ids[: first + 1] and cut.finish_reason == "stop"
    with pytest.raises(ValueError, match="speculative_mtp"):
        LLM(model, device="cpu", speculative_mtp=True)
