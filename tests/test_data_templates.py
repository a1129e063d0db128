"""Templates: the R1-Zero and R1 chat prompts, and loss masks that cover exactly the response tokens."""

from __future__ import annotations

import random

import pytest
from test_data_tokenizer import build_qwen_like, corpus

from r1lab.data.templates import (
    chat_segments,
    encode_messages,
    encode_prompt_response,
    format_r1_response,
    r1_chat_prompt,
    r1_zero_prompt,
    split_r1_response,
)
from r1lab.data.tokenizer import ASSISTANT, BOS, EOS, USER, Tokenizer, load_tokenizer, train_tokenizer


@pytest.fixture(scope="module")
def tok(tmp_path_factory: pytest.TempPathFactory) -> Tokenizer:
    out = tmp_path_factory.mktemp("tok")
    train_tokenizer(corpus(2000), vocab_size=400, out_dir=out)
    return load_tokenizer(out)


@pytest.fixture(scope="module")
def qwen(tmp_path_factory: pytest.TempPathFactory) -> Tokenizer:
    return load_tokenizer(build_qwen_like(tmp_path_factory.mktemp("qwen")))


def test_r1_zero_prompt_wording() -> None:
    expected = (
        "A conversation between User and Assistant. The user asks a question, and the Assistant solves it. "
        "The assistant first thinks about the reasoning process in the mind and then provides the user with the "
        "answer. The reasoning process and answer are enclosed within <think> </think> and <answer> </answer> tags, "
        "respectively, i.e., <think> reasoning process here </think> <answer> answer here </answer>. "
        "User: How many apples?. Assistant:"  # the paper's "User: prompt. Assistant:" taken literally
    )
    assert r1_zero_prompt("How many apples?") == expected


def test_r1_chat_prompt_and_response_format(tok: Tokenizer) -> None:
    assert r1_chat_prompt("2+3?", tok) == f"{BOS}{USER}2+3?{ASSISTANT}<think>\n"
    assert r1_chat_prompt("2+3?", tok, system="S") == f"{BOS}S{USER}2+3?{ASSISTANT}<think>\n"
    full = format_r1_response("2+3=5", "It is 5.")
    assert full == "<think>\n2+3=5\n</think>\n\nIt is 5."
    assert "<think>\n" + format_r1_response("2+3=5", "It is 5.", include_think_open=False) == full
    assert split_r1_response(full) == ("2+3=5", "It is 5.")


def test_prompt_response_mask_covers_exactly_response(tok: Tokenizer) -> None:
    prompt = r1_chat_prompt("the cat sat on 12 mats?", tok)
    response = format_r1_response("count 1 2", "12", include_think_open=False)
    ids, mask = encode_prompt_response(tok, prompt, response)
    n_prompt = len(tok.encode(prompt))
    assert len(ids) == len(mask)
    assert ids[:n_prompt] == tok.encode(prompt) and ids[0] == tok.bos_id and ids.count(tok.bos_id) == 1
    assert mask == [0] * n_prompt + [1] * (len(ids) - n_prompt)
    assert ids[-1] == tok.eos_id
    trained = [i for i, m in zip(ids, mask) if m]
    assert tok.decode(trained) == response + EOS
    ids2, mask2 = encode_prompt_response(tok, prompt, response, add_eos=False)
    assert ids2 == ids[:-1] and mask2 == mask[:-1]


def test_plain_prompt_gets_bos_and_boundary_is_not_merged(tok: Tokenizer) -> None:
    prompt, response = r1_zero_prompt("what does the cat do") + " the ca", "t sat"
    joint = tok.encode(prompt + response)
    ids, mask = encode_prompt_response(tok, prompt, response, add_eos=False)
    assert ids[0] == tok.bos_id and ids[1:] != joint  # BPE merged "ca"+"t" across the boundary in `joint`
    assert ids[1 : 1 + len(tok.encode(prompt))] == tok.encode(prompt)
    assert tok.decode([i for i, m in zip(ids, mask) if m]) == response
    assert tok.decode(ids[1:]) == prompt + response


def test_encode_messages_trains_only_assistant_turns(tok: Tokenizer) -> None:
    msgs = [
        {"role": "system", "content": "sys"},
        {"role": "user", "content": "1+1?"},
        {"role": "assistant", "content": "<think>\n1+1=2\n</think>\n\n2"},
        {"role": "user", "content": "and 2+2?"},
        {"role": "assistant", "content": "<think>\nfour\n</think>\n\n4"},
    ]
    ids, mask = encode_messages(tok, msgs)
    assert tok.decode(ids) == tok.apply_chat_template(msgs)
    trained = tok.decode([i for i, m in zip(ids, mask) if m])
    assert trained == f"<think>\n1+1=2\n</think>\n\n2{EOS}<think>\nfour\n</think>\n\n4{EOS}"
    # role tags, BOS and user text carry no loss
    for token in (tok.bos_id, tok.token_id(USER), tok.token_id(ASSISTANT)):
        assert all(m == 0 for i, m in zip(ids, mask) if i == token)
    assert mask[-1] == 1 and ids[-1] == tok.eos_id
    with pytest.raises(ValueError, match="no assistant"):
        encode_messages(tok, msgs[:2])
    with pytest.raises(ValueError, match="content"):
        encode_messages(tok, [{"role": "assistant"}])


def test_encode_messages_with_chatml_tokenizer(qwen: Tokenizer) -> None:
    msgs = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "the cat"}]
    pieces = chat_segments(qwen, msgs)
    assert pieces == [
        ("<|im_start|>user\nhi<|im_end|>\n", False),
        ("<|im_start|>assistant\n", False),
        ("the cat<|im_end|>\n", True),
    ]
    ids, mask = encode_messages(qwen, msgs)
    assert qwen.decode([i for i, m in zip(ids, mask) if m]) == "the cat<|im_end|>\n"
    assert qwen.decode(ids) == qwen.apply_chat_template(msgs)


def test_random_masks_align(tok: Tokenizer) -> None:
    rng = random.Random(0)
    rows = corpus(40, seed=5)
    for k in range(20):
        prompt, response = rows[2 * k], rows[2 * k + 1]
        cut = rng.randint(0, len(prompt))
        ids, mask = encode_prompt_response(tok, prompt[:cut], prompt[cut:] + response)
        assert sum(mask) == len(tok.encode(prompt[cut:] + response)) + 1
        assert tok.decode(ids[1:]) == prompt + response + EOS


def test_prompt_without_bos_tokenizer(qwen: Tokenizer) -> None:
    ids, mask = encode_prompt_response(qwen, "q", "a")
    assert ids == qwen.encode("q") + qwen.encode("a") + [qwen.eos_id]
    assert mask == [0] * len(qwen.encode("q")) + [1] * (len(qwen.encode("a")) + 1)
