"""FIM (PSM) transform: identity at rate 0, always transformed at rate 1, content multiset preserved."""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path

import pytest
from test_data_tokenizer import build_qwen_like, corpus

from r1lab.data.fim import FimTokenIds, apply_fim, fim_documents, fim_token_ids
from r1lab.data.tokenizer import FIM_BEGIN, FIM_END, FIM_HOLE, load_tokenizer, train_tokenizer

IDS = FimTokenIds(begin=900, hole=901, end=902, bos=0, eos=1)


def random_doc(rng: random.Random, framed: bool = True) -> list[int]:
    content = [rng.randint(10, 50) for _ in range(rng.randint(0, 40))]
    return [0, *content, 1] if framed else content


def test_rate_zero_is_identity() -> None:
    rng = random.Random(0)
    for _ in range(200):
        doc = random_doc(rng)
        assert apply_fim(doc, rng, 0.0, IDS) == doc


@pytest.mark.parametrize("framed", [True, False])
def test_rate_one_always_psm_and_preserves_content(framed: bool) -> None:
    rng = random.Random(1)
    for _ in range(300):
        doc = random_doc(rng, framed)
        out = apply_fim(doc, rng, 1.0, IDS)
        assert len(out) == len(doc) + 3
        assert out.count(IDS.begin) == out.count(IDS.hole) == out.count(IDS.end) == 1
        content = [t for t in doc if t not in (IDS.bos, IDS.eos)]
        assert Counter(t for t in out if t not in (900, 901, 902, IDS.bos, IDS.eos)) == Counter(content)
        if framed:
            assert out[0] == IDS.bos and out[1] == IDS.begin and out[-1] == IDS.eos
        else:
            assert out[0] == IDS.begin
        # PSM order: begin prefix hole suffix end middle; putting the middle back restores the document
        body = out[1:-1] if framed else out
        b, h, e = body.index(IDS.begin), body.index(IDS.hole), body.index(IDS.end)
        assert b == 0 and b < h < e
        prefix, suffix, middle = body[b + 1 : h], body[h + 1 : e], body[e + 1 :]
        assert prefix + middle + suffix == content


def test_rate_is_respected_and_reproducible() -> None:
    docs = [list(range(10, 30)) for _ in range(4000)]
    out = list(fim_documents(docs, IDS, rate=0.1, seed=3))
    frac = sum(IDS.begin in d for d in out) / len(docs)
    assert 0.08 < frac < 0.12
    assert out == list(fim_documents(docs, IDS, rate=0.1, seed=3))
    with pytest.raises(ValueError, match="rate"):
        apply_fim([1, 2], random.Random(0), 1.5, IDS)


def test_fim_token_ids_from_tokenizers(tmp_path: Path) -> None:
    train_tokenizer(corpus(200), vocab_size=300, out_dir=tmp_path / "ours")
    ours = load_tokenizer(tmp_path / "ours")
    ids = fim_token_ids(ours)
    assert (ids.begin, ids.hole, ids.end) == tuple(ours.token_id(t) for t in (FIM_BEGIN, FIM_HOLE, FIM_END))
    assert (ids.bos, ids.eos) == (ours.bos_id, ours.eos_id)
    doc = ours.encode("the cat sat on the mat", add_bos=True) + [ours.eos_id]
    text = ours.decode(apply_fim(doc, random.Random(4), 1.0, ids))
    assert text.startswith("<｜begin▁of▁sentence｜><｜fim▁begin｜>") and text.endswith("<｜end▁of▁sentence｜>")
    qwen = load_tokenizer(build_qwen_like(tmp_path / "qwen"))
    q = fim_token_ids(qwen)
    assert q.begin == qwen.token_id("<|fim_prefix|>") and q.end == qwen.token_id("<|fim_middle|>") and q.bos is None
