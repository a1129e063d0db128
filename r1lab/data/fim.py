"""Fill-in-the-middle (FIM) transform, Prefix-Suffix-Middle mode, applied to whole documents.

Source: DeepSeek-V3 (arXiv 2412.19437 §4.1), following DeepSeekCoder-V2 and Bavarian et al. 2022 ("Efficient
Training of Language Models to Fill in the Middle"): with probability ``rate`` (0.1 in V3) a document becomes
``<｜fim▁begin｜>prefix<｜fim▁hole｜>suffix<｜fim▁end｜>middle<|eos|>``, trained with the ordinary next-token loss.

Deliberate difference: the two cut points are drawn uniformly over the document's *tokens* (Bavarian et al. cut on
characters and re-tokenise). Working on ids lets FIM run on an already tokenised stream with no second tokenisation;
the cost is that the middle always starts and ends on a token boundary, so the model never learns to complete
mid-token. A leading BOS and a trailing EOS stay where they are (they frame the document, they are not content).
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from r1lab.data.tokenizer import Tokenizer

DEFAULT_FIM_RATE = 0.1

# (begin, hole, end) names, PSM order: begin precedes the prefix, hole precedes the suffix, end precedes the middle.
FIM_TOKEN_NAMES: tuple[tuple[str, str, str], ...] = (
    ("<｜fim▁begin｜>", "<｜fim▁hole｜>", "<｜fim▁end｜>"),  # DeepSeek (ours)
    ("<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>"),  # Qwen2.5 / Qwen3
    ("<fim_prefix>", "<fim_suffix>", "<fim_middle>"),  # StarCoder
)


@dataclass(frozen=True)
class FimTokenIds:
    begin: int
    hole: int
    end: int
    bos: int | None = None
    eos: int | None = None


def fim_token_ids(tokenizer: Tokenizer) -> FimTokenIds:
    """The FIM ids of a tokenizer (DeepSeek, Qwen or StarCoder names), plus its BOS / EOS."""
    for names in FIM_TOKEN_NAMES:
        ids = [tokenizer.token_id(name) for name in names]
        if all(i is not None for i in ids):
            begin, hole, end = ids
            return FimTokenIds(begin, hole, end, bos=tokenizer.bos_id, eos=tokenizer.eos_id)  # type: ignore[arg-type]
    raise ValueError(f"tokenizer has no FIM tokens (looked for {[n[0] for n in FIM_TOKEN_NAMES]})")


def apply_fim(doc_ids: Sequence[int], rng: random.Random, rate: float, tok_ids: FimTokenIds) -> list[int]:
    """With probability ``rate`` returns ``[bos] begin prefix hole suffix end middle [eos]``, else ``doc_ids``.

    ``bos`` / ``eos`` appear only if the document started / ended with them. The content tokens are the same
    multiset either way; the split is two uniform cut points over the content tokens.

    >>> ids = FimTokenIds(begin=100, hole=101, end=102, bos=0, eos=1)
    >>> apply_fim([0, 5, 6, 7, 1], random.Random(0), 0.0, ids)
    [0, 5, 6, 7, 1]
    >>> out = apply_fim([0, 5, 6, 7, 1], random.Random(0), 1.0, ids)
    >>> out[:2], out[-1], sorted(out[2:-1])
    ([0, 100], 1, [5, 6, 7, 101, 102])
    """
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"FIM rate must be in [0, 1], got {rate}")
    doc = list(doc_ids)
    if rate == 0.0 or rng.random() >= rate:
        return doc
    head = doc[:1] if doc and tok_ids.bos is not None and doc[0] == tok_ids.bos else []
    tail = doc[-1:] if len(doc) > len(head) and tok_ids.eos is not None and doc[-1] == tok_ids.eos else []
    content = doc[len(head) : len(doc) - len(tail)]
    a, b = sorted(rng.randint(0, len(content)) for _ in range(2))
    prefix, middle, suffix = content[:a], content[a:b], content[b:]
    return [*head, tok_ids.begin, *prefix, tok_ids.hole, *suffix, tok_ids.end, *middle, *tail]


def fim_documents(
    docs: Iterable[Sequence[int]], tok_ids: FimTokenIds, rate: float = DEFAULT_FIM_RATE, seed: int = 0
) -> Iterator[list[int]]:
    """``apply_fim`` over a document stream with one seeded generator (reproducible)."""
    rng = random.Random(seed)
    for doc in docs:
        yield apply_fim(doc, rng, rate, tok_ids)
