"""Data-parallel generation over CPU processes (``r1lab.engine.workers``): the same tokens, log-probs, finish reasons
and prompt order as one process; the helpers follow in-place weight updates; what they cannot take runs here."""

import pytest
import torch

from r1lab.data.tokenizer import train_tokenizer
from r1lab.engine import LLM, SamplingParams
from r1lab.engine import workers as W
from r1lab.model import DeepSeekV3Config, DeepSeekV3ForCausalLM

pytestmark = pytest.mark.usefixtures("one_thread")

PROMPTS = [[5, 6, 7], [9, 10], [11, 12, 13, 14, 15], [20], [21, 22, 23], [30, 31], [40, 41, 42, 43]]


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(1)
    return DeepSeekV3ForCausalLM(DeepSeekV3Config.from_preset("tiny").replace(initializer_range=0.1)).eval()


@pytest.fixture(scope="module", autouse=True)
def stop_helpers():
    yield
    W.drop_pool()


def _flat(outs):
    """Tokens and finish reasons, exactly (log-probs: ``_same_logprobs``)."""
    return [(o.token_ids, o.finish_reason) for r in outs for o in r.outputs]


def _same_logprobs(a, b) -> bool:
    """Within 1e-5: batches of another size round differently in fp32 (the only difference workers make)."""
    la = torch.tensor([x for r in a for o in r.outputs for x in o.logprobs])
    lb = torch.tensor([x for r in b for o in r.outputs for x in o.logprobs])
    return la.shape == lb.shape and torch.allclose(la, lb, atol=1e-5, rtol=0)


def test_worker_helpers_are_pure():
    assert W.deal(7, 3) == [[0, 3, 6], [1, 4], [2, 5]]
    assert W.resolve_workers(2) == 2 and W.resolve_workers("auto") >= 1
    with pytest.raises(ValueError, match="workers"):
        W.resolve_workers("many")
    with pytest.raises(ValueError, match="workers"):
        W.resolve_workers(0)


def test_env_variable_sets_the_default(monkeypatch, model):
    monkeypatch.setenv(W.ENV, "1")
    assert LLM(model).workers == 1
    monkeypatch.setenv(W.ENV, "3")
    assert W.resolve_workers(None) == 3


@pytest.mark.parametrize("temperature", [0.0, 0.8])
def test_two_workers_equal_one_process(model, temperature):
    """Greedy and seeded sampling (with top-p and stop ids): every prompt's completions — tokens and finish reasons
    exactly, log-probs within 1e-5 — equal the one-process run, in prompt order, with per-prompt SamplingParams."""
    params = [SamplingParams(n=3, temperature=temperature, top_p=0.9, max_tokens=10 + i, seed=7 + i,
                             stop_token_ids=[17]) for i in range(len(PROMPTS))]
    one = LLM(model, workers=1, max_batch_size=8).generate(prompt_token_ids=PROMPTS, sampling_params=params)
    llm = LLM(model, workers=2, max_batch_size=8)
    two = llm.generate(prompt_token_ids=PROMPTS, sampling_params=params)
    assert llm.workers == 2  # the helpers served it (no fallback)
    assert _flat(two) == _flat(one) and _same_logprobs(two, one)
    assert [r.prompt_token_ids for r in two] == PROMPTS
    reasons = {o.finish_reason for r in two for o in r.outputs}
    assert reasons == {"stop", "length"} or temperature == 0.0
    assert llm.stats.tokens_generated == sum(len(o.token_ids) for r in two for o in r.outputs)


def test_helpers_follow_weight_updates(model):
    """A trainer updates the module in place between calls (as GRPO does): the helpers sample from the new weights."""
    import copy

    policy = copy.deepcopy(model)
    llm = LLM(policy, workers=2, max_batch_size=8)
    sp = SamplingParams(n=3, temperature=0.0, max_tokens=8)
    before = llm.generate(prompt_token_ids=PROMPTS, sampling_params=sp)
    with torch.no_grad():
        for p in policy.parameters():
            p.add_(torch.randn_like(p) * 0.2)
    after = llm.generate(prompt_token_ids=PROMPTS, sampling_params=sp)
    reference = LLM(policy, workers=1, max_batch_size=8).generate(prompt_token_ids=PROMPTS, sampling_params=sp)
    assert llm.workers == 2
    assert _flat(after) == _flat(reference) and _flat(after) != _flat(before)


def test_text_prompts_and_stop_strings_through_helpers(tmp_path):
    """Text prompts keep their text in the output; stop strings are applied in the helper with the same tokenizer."""
    torch.manual_seed(2)
    model = DeepSeekV3ForCausalLM(DeepSeekV3Config.from_preset("tiny").replace(vocab_size=320)).eval()
    train_tokenizer(["the answer is 42 and more words here"] * 20, 300, tmp_path)
    prompts = ["the answer", "is 42", "more words", "here and", "words the", "42 42"]
    sp = SamplingParams(n=3, temperature=0.9, max_tokens=12, seed=3, stop=["e"])
    one = LLM(model, tokenizer=tmp_path, workers=1).generate(prompts, sp)
    llm = LLM(model, tokenizer=tmp_path, workers=2)
    two = llm.generate(prompts, sp)
    assert llm.workers == 2
    assert [r.prompt for r in two] == prompts
    assert [o.text for r in two for o in r.outputs] == [o.text for r in one for o in r.outputs]


def test_small_calls_stay_here_and_unusable_helpers_fall_back(model, caplog):
    llm = LLM(model, workers=2)
    assert not llm._parallel_ok([SamplingParams(n=2)] * 3)  # 6 sequences < MIN_SEQUENCES

    class LocalTokenizer:  # defined in a function: cannot be pickled to a helper
        eos_id = None

        def encode(self, text):
            return [5 + (ord(c) % 20) for c in text]

        def decode(self, ids, skip_special_tokens=True):
            return " ".join(map(str, ids))

    sp = SamplingParams(n=4, temperature=0.0, max_tokens=6)
    one = LLM(model, tokenizer=LocalTokenizer(), workers=1).generate(prompt_token_ids=PROMPTS, sampling_params=sp)
    llm = LLM(model, tokenizer=LocalTokenizer(), workers=2)
    with caplog.at_level("WARNING"):
        two = llm.generate(prompt_token_ids=PROMPTS, sampling_params=sp)
    assert llm.workers == 1 and "generating in this process" in caplog.text
    assert _flat(two) == _flat(one)


def test_dense_hf_model_through_helpers():
    """A transformers Qwen2 model (the dense runner) is rebuilt in the helper from its config."""
    transformers = pytest.importorskip("transformers")
    cfg = transformers.Qwen2Config(vocab_size=96, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                                   eos_token_id=95, tie_word_embeddings=True)
    torch.manual_seed(0)
    model = transformers.Qwen2ForCausalLM(cfg).eval()
    sp = SamplingParams(n=3, temperature=0.7, max_tokens=8, seed=1)
    one = LLM(model, workers=1).generate(prompt_token_ids=PROMPTS, sampling_params=sp)
    llm = LLM(model, workers=2)
    two = llm.generate(prompt_token_ids=PROMPTS, sampling_params=sp)
    assert llm.workers == 2
    assert _flat(two) == _flat(one)


def test_full_shared_memory_falls_back(model, monkeypatch, caplog):
    """No room in /dev/shm for the weights' mirror: the call runs in this process (never a SIGBUS later)."""
    sp = SamplingParams(n=4, temperature=0.0, max_tokens=6)
    one = LLM(model, workers=1).generate(prompt_token_ids=PROMPTS, sampling_params=sp)
    monkeypatch.setattr(W, "shm_free_bytes", lambda path="/dev/shm": 1 << 20)
    llm = LLM(model, workers=2)
    with caplog.at_level("WARNING"):
        two = llm.generate(prompt_token_ids=PROMPTS, sampling_params=sp)
    assert llm.workers == 1 and "/dev/shm" in caplog.text
    assert _flat(two) == _flat(one)
