"""Prompt templates of DeepSeek-R1 and loss masks for prompt/response training data.

Sources: DeepSeek-R1 paper (arXiv 2501.12948) Table 1 (the R1-Zero template, copied word for word, ``prompt`` replaced
by the question) and §2.3.1 / README (the R1 chat format; responses are ``<think>\\n{reasoning}\\n</think>\\n\\n
{summary}`` and generation is forced to start with ``<think>\\n``).

Loss masks: prompt and response are tokenised *separately* and the ids concatenated. Tokenising the joined string
would let BPE merge characters across the boundary (``"Assistant:" + " <think>"`` can become one token ``": "``), so
the first response token could start inside the prompt and the mask would be off by one; it would also differ from
what the model sees at generation time, where the response is sampled after the prompt's own ids. With separate
tokenisation, training, RL rollouts and inference agree on the token sequence.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from r1lab.data.tokenizer import Tokenizer

R1_ZERO_TEMPLATE = (
    "A conversation between User and Assistant. The user asks a question, and the Assistant solves it. "
    "The assistant first thinks about the reasoning process in the mind and then provides the user with the answer. "
    "The reasoning process and answer are enclosed within <think> </think> and <answer> </answer> tags, "
    "respectively, i.e., <think> reasoning process here </think> <answer> answer here </answer>. "
    "User: {question}. Assistant:"
)

THINK_PREFIX = "<think>\n"


def r1_zero_prompt(question: str) -> str:
    """The R1-Zero training template (paper Table 1) around ``question``.

    >>> r1_zero_prompt("What is 2+3?").endswith("User: What is 2+3?. Assistant:")
    True
    """
    return R1_ZERO_TEMPLATE.format(question=question)


def r1_chat_prompt(question: str, tokenizer: Tokenizer, system: str | None = None) -> str:
    """The R1 chat prompt: the tokenizer's chat template for one user turn, with the generation prompt.

    With our tokenizer this is ``<｜begin▁of▁sentence｜><｜User｜>{question}<｜Assistant｜><think>\\n``.
    """
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": question}]
    return tokenizer.apply_chat_template(messages, add_generation_prompt=True)


def format_r1_response(reasoning: str, summary: str, include_think_open: bool = True) -> str:
    """``<think>\\n{reasoning}\\n</think>\\n\\n{summary}``; without the opening ``<think>\\n`` when the prompt
    already ends with it (``r1_chat_prompt`` does).

    >>> format_r1_response("2+3=5", "The answer is 5.")
    '<think>\\n2+3=5\\n</think>\\n\\nThe answer is 5.'
    """
    body = f"{reasoning}\n</think>\n\n{summary}"
    return THINK_PREFIX + body if include_think_open else body


def split_r1_response(text: str) -> tuple[str | None, str]:
    """(reasoning, summary) of a response; reasoning is None when there is no ``</think>``.

    >>> split_r1_response("<think>\\nhmm\\n</think>\\n\\nIt is 5.")
    ('hmm', 'It is 5.')
    >>> split_r1_response("It is 5.")
    (None, 'It is 5.')
    """
    head, sep, tail = text.partition("</think>")
    if not sep:
        return None, text.strip()
    reasoning = head.split("<think>", 1)[-1]
    return reasoning.strip(), tail.strip()


def encode_prompt_response(
    tokenizer: Tokenizer, prompt_text: str, response_text: str, add_eos: bool = True, add_bos: bool = True
) -> tuple[list[int], list[int]]:
    """(input_ids, loss_mask): prompt tokens get mask 0, response tokens (and the final eos) mask 1.

    ``add_bos`` prepends BOS unless the prompt already starts with it (a chat-templated prompt does) or the
    tokenizer has none.
    """
    prompt_ids = tokenizer.encode(prompt_text)
    if add_bos and tokenizer.bos_id is not None and prompt_ids[:1] != [tokenizer.bos_id]:
        prompt_ids = [tokenizer.bos_id, *prompt_ids]
    response_ids = tokenizer.encode(response_text)
    if add_eos:
        response_ids.append(tokenizer.eos_id)
    if not response_ids:
        raise ValueError("empty response: nothing to train on")
    return prompt_ids + response_ids, [0] * len(prompt_ids) + [1] * len(response_ids)


_SENTINEL = "\x00R1LAB_ASSISTANT_CONTENT\x00"


def chat_segments(tokenizer: Tokenizer, messages: Sequence[Mapping[str, str]]) -> list[tuple[str, bool]]:
    """Splits the rendered conversation into (text, trained) pieces; only assistant contents (and what the template
    appends after them, e.g. EOS / ``<|im_end|>``) are trained, role headers are not.

    Works with any chat template whose rendering of ``messages[:k]`` is a prefix of that of ``messages[:k+1]``.
    """
    msgs = [dict(m) for m in messages]
    for i, m in enumerate(msgs):
        if "role" not in m or "content" not in m or not isinstance(m["content"], str):
            raise ValueError(f"message {i}: needs a 'role' and a string 'content', got keys {sorted(m)}")
    pieces: list[tuple[str, bool]] = []
    prev = ""
    for k, msg in enumerate(msgs):
        cur = tokenizer.apply_chat_template(msgs[: k + 1])
        if not cur.startswith(prev):
            raise ValueError(f"message {k}: chat template is not prefix-stable; cannot build a loss mask")
        segment = cur[len(prev) :]
        if msg["role"] == "assistant":
            probe = tokenizer.apply_chat_template(msgs[:k] + [{"role": "assistant", "content": _SENTINEL}])
            at = probe.find(_SENTINEL)
            header = probe[len(prev) : at] if at >= len(prev) and probe.startswith(prev) else ""
            if not segment.startswith(header):
                raise ValueError(f"message {k}: cannot locate the assistant header in the rendered template")
            if header:
                pieces.append((header, False))
            pieces.append((segment[len(header) :], True))
        else:
            pieces.append((segment, False))
        prev = cur
    return [(text, trained) for text, trained in pieces if text]


def encode_messages(tokenizer: Tokenizer, messages: Sequence[Mapping[str, str]]) -> tuple[list[int], list[int]]:
    """(input_ids, loss_mask) for a {"messages": [...]} row; only assistant turns are trained (mask 1).

    Each piece is tokenised separately (see the module docstring).
    """
    if not any(m.get("role") == "assistant" for m in messages):
        raise ValueError("conversation has no assistant message: nothing to train on")
    ids: list[int] = []
    mask: list[int] = []
    for text, trained in chat_segments(tokenizer, messages):
        piece = tokenizer.encode(text)
        ids += piece
        mask += [int(trained)] * len(piece)
    return ids, mask
