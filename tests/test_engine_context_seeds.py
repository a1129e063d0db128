"""Engine guards and seeded streams: an explicit max_model_len beyond the model's context is an error naming both
numbers (ours and transformers models, and through GRPO's sampler factory — never a silent fallback); the naive
sampler refuses prompts past the context; non-finite SamplingParams are rejected; neighbouring seeds give unrelated
sample streams."""

from types import SimpleNamespace

import pytest
import torch

from r1lab.engine import LLM, ContextLengthError, SamplingParams
from r1lab.engine.params import model_context, stream_seed
from r1lab.model import DeepSeekV3Config, DeepSeekV3ForCausalLM
from r1lab.rl.sampler import NaiveSampler, make_sampler

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(3)
    return DeepSeekV3ForCausalLM(DeepSeekV3Config.from_preset("tiny").replace(initializer_range=0.1)).eval()


# ------------------------------------------------------------------------------------------------ context
def test_max_model_len_beyond_the_context_names_both_numbers(model):
    context = model.config.max_position_embeddings
    with pytest.raises(ValueError, match=rf"max_model_len {context + 72}.*context.*{context}"):
        LLM(model, max_model_len=context + 72, max_batch_size=2)
    with pytest.raises(ContextLengthError):
        LLM(model, max_model_len=context + 1, max_batch_size=2)
    assert LLM(model, max_model_len=context, max_batch_size=2).max_model_len == context  # the context itself fits
    assert LLM(model, max_batch_size=2).max_model_len == context  # the default


def test_prompt_past_the_context_is_a_context_error(model):
    context = model.config.max_position_embeddings
    llm = LLM(model, max_batch_size=2)
    with pytest.raises(ContextLengthError, match=rf"prompt 0 has {context + 10} tokens.*{context}") as info:
        llm.generate(prompt_token_ids=[[1] * (context + 10)])
    assert (info.value.tokens, info.value.limit) == (context + 10, context)


def test_transformers_model_context_is_checked_too():
    transformers = pytest.importorskip("transformers")
    cfg = transformers.Qwen2Config(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=96)
    hf = transformers.Qwen2ForCausalLM(cfg)
    for hf_backend in (False, True):
        with pytest.raises(ValueError, match=r"max_model_len 300 .*96"):
            LLM(hf, max_model_len=300, max_batch_size=2, hf_backend=hf_backend)
    assert model_context(SimpleNamespace(n_positions=1024)) == 1024  # GPT-2's name for it
    assert model_context(SimpleNamespace()) is None


def test_grpo_sampler_factory_does_not_fall_back_past_the_context(model):
    """GRPO builds its sampler with max_model_len = longest prompt + max_new_tokens + 8: beyond the context that is
    an error in "auto" as in "engine", not a silent switch to the naive sampler that would run past the context."""
    tok = SimpleNamespace(eos_id=1, pad_id=0, encode=lambda text: [5], decode=lambda ids: "")
    context = model.config.max_position_embeddings
    for kind in ("auto", "engine"):
        with pytest.raises(ContextLengthError, match=str(context)):
            make_sampler(model, tok, kind, max_model_len=context + 100, max_batch_size=2)
    naive = NaiveSampler(model, eos_id=1, pad_id=0)
    with pytest.raises(ValueError, match=rf"prompt 1 has {context} tokens.*{context}"):
        naive.sample([[5, 6], [7] * context], 2, 4, 1.0, 1.0, seed=0)


def test_naive_sampler_completions_end_at_the_context(model):
    """Like the engine at its max_model_len: a row that reaches the context ends there ("length"); others go on."""
    context = model.config.max_position_embeddings
    naive = NaiveSampler(model, eos_id=-1, pad_id=0)  # no EOS ever: only the budgets end the rows
    near, short = naive.sample([[7] * (context - 3), [5, 6]], 1, 10, 1.0, 1.0, seed=0)
    assert len(near[0].token_ids) == len(near[0].logprobs) == 3 and near[0].finish_reason == "length"
    assert len(short[0].token_ids) == 10 and short[0].finish_reason == "length"


# ------------------------------------------------------------------------------------------------ SamplingParams
@pytest.mark.parametrize("field,value", [("temperature", float("nan")), ("temperature", float("inf")),
                                         ("top_p", float("nan")), ("min_p", float("nan")), ("min_p", float("inf"))])
def test_non_finite_sampling_params_are_rejected(field, value):
    with pytest.raises(ValueError, match=rf"SamplingParams\.{field} must be a finite number"):
        SamplingParams(**{field: value})


# ------------------------------------------------------------------------------------------------ seeded streams
def test_neighbouring_seeds_share_no_sample_stream(model):
    """With ``stream_seed(seed + j, prompt)`` seed 5's samples 1..3 were seed 6's samples 0..2."""
    llm = LLM(model, max_batch_size=8)
    prompt = [[5, 9, 13, 2]]

    def samples(seed: int) -> list[tuple[int, ...]]:
        sp = SamplingParams(n=4, temperature=1.0, max_tokens=8, seed=seed, stop_token_ids=[])
        return [tuple(c.token_ids) for c in llm.generate(prompt_token_ids=prompt, sampling_params=sp)[0].outputs]

    a, b = samples(5), samples(6)
    assert len(set(a)) == 4 and not set(a) & set(b)
    assert samples(5) == a  # still deterministic
    seeds = {stream_seed(s, j, prompt[0]) for s in range(5, 8) for j in range(4)}
    assert len(seeds) == 12


def test_seeded_sample_does_not_depend_on_its_batch(model):
    """Per-prompt streams survive the change: the same (prompt, seed) gives the same samples alone, after other
    prompts, and with fewer cache slots (other slot order)."""
    sp = SamplingParams(n=3, temperature=1.0, max_tokens=6, seed=11, stop_token_ids=[])
    target = [4, 8, 15, 16]
    alone = LLM(model, max_batch_size=8).generate(prompt_token_ids=[target], sampling_params=sp)[0]
    mixed = LLM(model, max_batch_size=4).generate(prompt_token_ids=[[23, 42], target, [7]], sampling_params=sp)[1]
    assert [c.token_ids for c in alone.outputs] == [c.token_ids for c in mixed.outputs]
