"""Engine API behaviour: SamplingParams validation, stop ids / stop strings, finish reasons, context errors,
text prompts through our tokenizer, weight sharing by reference, stats."""

import pytest
import torch

from r1lab.data.tokenizer import train_tokenizer
from r1lab.engine import LLM, SamplingParams
from r1lab.model import DeepSeekV3Config, DeepSeekV3ForCausalLM


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(1)
    return DeepSeekV3ForCausalLM(DeepSeekV3Config.from_preset("tiny").replace(initializer_range=0.1)).eval()


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("tok")
    texts = ["the answer is 42 <think> a b c </think> STOP done", "hello world and more words here"] * 30
    train_tokenizer(texts, 300, d)
    return d


@pytest.mark.parametrize("field,kwargs", [
    ("n", {"n": 0}), ("max_tokens", {"max_tokens": 0}), ("temperature", {"temperature": -0.1}),
    ("top_p", {"top_p": 0.0}), ("top_p", {"top_p": 1.5}), ("top_k", {"top_k": -1}),
    ("min_p", {"min_p": -0.1}), ("min_p", {"min_p": 1.1}),
])
def test_sampling_params_validation_names_the_field(field, kwargs):
    with pytest.raises(ValueError, match=field):
        SamplingParams(**kwargs)


def test_stop_token_ids_and_length(model):
    llm = LLM(model, max_batch_size=4)
    free = llm.generate(prompt_token_ids=[[5, 6, 7]], sampling_params=SamplingParams(temperature=0, max_tokens=12))
    ids = free[0].outputs[0].token_ids
    assert len(ids) == 12 and free[0].outputs[0].finish_reason == "length"
    stop_at = ids[4]
    first = ids.index(stop_at)
    cut = llm.generate(prompt_token_ids=[[5, 6, 7]],
                       sampling_params=SamplingParams(temperature=0, max_tokens=12, stop_token_ids=[stop_at]))
    out = cut[0].outputs[0]
    assert out.token_ids == ids[: first + 1] and out.finish_reason == "stop"  # the stop token is kept in the ids
    assert len(out.logprobs) == len(out.token_ids)


def test_model_that_never_emits_eos_ends_with_length(model):
    out = LLM(model).generate(prompt_token_ids=[[3, 4]], sampling_params=SamplingParams(temperature=0, max_tokens=20))
    assert model.config.eos_token_id not in out[0].outputs[0].token_ids
    assert out[0].outputs[0].finish_reason == "length" and len(out[0].outputs[0].token_ids) == 20


def test_context_limit(model):
    llm = LLM(model, max_model_len=16)
    with pytest.raises(ValueError, match=r"prompt 1 has 16 tokens.*16"):
        llm.generate(prompt_token_ids=[[1, 2], list(range(2, 18))])
    out = llm.generate(prompt_token_ids=[list(range(2, 12))],
                       sampling_params=SamplingParams(temperature=0, max_tokens=50, stop_token_ids=[]))
    assert len(out[0].outputs[0].token_ids) == 6 and out[0].outputs[0].finish_reason == "length"
    with pytest.raises(ValueError, match="exactly one"):
        llm.generate()


def test_text_prompts_stop_strings_and_eos(tok_dir, model):
    from r1lab.data.tokenizer import load_tokenizer
    tok = load_tokenizer(tok_dir)
    torch.manual_seed(2)
    cfg = DeepSeekV3Config.from_preset("tiny").replace(vocab_size=tok.vocab_size, initializer_range=0.1)
    m = DeepSeekV3ForCausalLM(cfg).eval()
    llm = LLM(m, tokenizer=tok_dir)
    free = llm.generate(["the answer is"], SamplingParams(temperature=0, max_tokens=30, stop_token_ids=[]))[0]
    assert free.prompt_token_ids[0] == tok.bos_id  # BOS added like training does
    text = free.outputs[0].text
    assert text == tok.decode(free.outputs[0].token_ids, skip_special_tokens=True)
    stop = text[5:8]
    assert stop and stop not in text[:7]
    cut = llm.generate(["the answer is"], SamplingParams(temperature=0, max_tokens=30, stop=[stop], stop_token_ids=[]))
    assert cut[0].outputs[0].text == text[: text.index(stop)] and cut[0].outputs[0].finish_reason == "stop"
    kept = llm.generate(["the answer is"], SamplingParams(temperature=0, max_tokens=30, stop=stop, stop_token_ids=[],
                                                          include_stop_str_in_output=True))
    assert kept[0].outputs[0].text == text[: text.index(stop) + len(stop)]
    # EOS from the tokenizer ends a completion; its text is not shown
    first = free.outputs[0].token_ids[0]
    with torch.no_grad():  # swap the head rows of EOS and the greedy first token: EOS becomes the argmax
        w = m.lm_head.weight
        w[[first, tok.eos_id]] = w[[tok.eos_id, first]]
    eos = llm.generate(["the answer is"], SamplingParams(temperature=0, max_tokens=5))[0].outputs[0]
    assert eos.token_ids == [tok.eos_id] and eos.finish_reason == "stop" and eos.text == ""


def test_update_weights_holds_the_module_by_reference(model):
    llm = LLM(model)
    prompt = [[8, 9, 10]]
    sp = SamplingParams(temperature=0, max_tokens=6)
    before = llm.generate(prompt_token_ids=prompt, sampling_params=sp)[0].outputs[0].token_ids
    other = DeepSeekV3ForCausalLM(model.config)
    other.train()
    llm.update_weights(other)
    assert llm.model is other
    llm.generate(prompt_token_ids=prompt, sampling_params=sp)  # runs on the new module
    assert other.training  # generate runs in eval mode and restores the caller's mode
    assert all(float(m.tokens_per_expert.sum()) == 0 for m in other.moe_layers())
    with torch.no_grad():  # in-place edits of the shared module are seen at once
        other.load_state_dict(model.state_dict())
    assert llm.generate(prompt_token_ids=prompt, sampling_params=sp)[0].outputs[0].token_ids == before
    llm.update_weights({k: v.clone() for k, v in model.state_dict().items()})
    assert llm.generate(prompt_token_ids=prompt, sampling_params=sp)[0].outputs[0].token_ids == before


def test_stats(model):
    llm = LLM(model, max_batch_size=4)
    llm.generate(prompt_token_ids=[[1, 2, 3]] * 3, sampling_params=SamplingParams(max_tokens=7, stop_token_ids=[]))
    assert llm.stats.tokens_generated == 21 and llm.stats.seconds > 0 and llm.stats.tokens_per_second > 0
    assert llm.stats.acceptance_rate is None


def test_stream_yields_the_same_tokens_as_generate(model):
    llm = LLM(model)
    sp = SamplingParams(temperature=0.9, max_tokens=9, seed=4, stop_token_ids=[])
    ref = llm.generate(prompt_token_ids=[[4, 5, 6]], sampling_params=sp)[0].outputs[0].token_ids
    assert list(llm.stream([4, 5, 6], sp)) == ref
    with pytest.raises(ValueError, match="n = 2"):
        list(llm.stream([4, 5, 6], SamplingParams(n=2)))


def test_directory_loading_and_tokenizer_objects(model, tok_dir, tmp_path):
    torch.manual_seed(5)
    from transformers import AutoTokenizer
    model.save_pretrained(tmp_path)
    llm = LLM(str(tmp_path), device="cpu")  # no tokenizer files there
    assert llm.tokenizer is None and llm.is_deepseek
    with pytest.raises(ValueError, match="tokenizer"):
        llm.generate(["text"])
    ids = llm.generate(prompt_token_ids=[[3, 4]], sampling_params=SamplingParams(temperature=0, max_tokens=5))
    ref = LLM(model).generate(prompt_token_ids=[[3, 4]], sampling_params=SamplingParams(temperature=0, max_tokens=5))
    assert ids[0].outputs[0].token_ids == ref[0].outputs[0].token_ids
    hf_tok = AutoTokenizer.from_pretrained(str(tok_dir))  # an HF tokenizer object is wrapped
    big = DeepSeekV3ForCausalLM(model.config.replace(vocab_size=len(hf_tok)))
    with_tok = LLM(big, tokenizer=hf_tok)
    out = with_tok.generate(["hello"], SamplingParams(temperature=0, max_tokens=3, stop_token_ids=[]))[0]
    assert out.prompt == "hello" and out.prompt_token_ids[0] == hf_tok.bos_token_id
    assert out.outputs[0].text == hf_tok.decode(out.outputs[0].token_ids, skip_special_tokens=True)
