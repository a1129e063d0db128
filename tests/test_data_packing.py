"""Best-fit-decreasing packing: tokens preserved, no truncation, efficiency, doc/position ids, masks, batches."""

from __future__ import annotations

import logging
import random
from collections import Counter
from pathlib import Path

import pytest
import torch

from r1lab.data.packing import (
    IGNORE_INDEX,
    PackedData,
    batches,
    best_fit_decreasing,
    best_fit_decreasing_naive,
    concat_packed,
    doc_attention_mask,
    join_row_documents,
    next_token_targets,
    num_batches,
    pack_documents,
    pack_stream,
)

PAD = 0


def random_docs(n: int, max_len: int, seed: int = 0) -> list[list[int]]:
    rng = random.Random(seed)
    return [[rng.randint(1, 999) for _ in range(rng.randint(1, max_len))] for _ in range(n)]


def first_fit_rows(lengths: list[int], capacity: int) -> int:
    """First fit in the given order (no sorting): the baseline BFD must beat or match."""
    room: list[int] = []
    for n in lengths:
        for b, r in enumerate(room):
            if r >= n:
                room[b] -= n
                break
        else:
            room.append(capacity - n)
    return len(room)


def rows_as_docs(packed: PackedData) -> list[list[int]]:
    """Reconstructs the documents from the packed rows using doc_ids."""
    out = []
    for ids, doc in zip(packed.input_ids_NT.tolist(), packed.doc_ids_NT.tolist()):
        for k in range(1, max(doc) + 1):
            out.append([t for t, d in zip(ids, doc) if d == k])
    return out


def test_fast_bfd_equals_readable_twin() -> None:
    rng = random.Random(0)
    for trial in range(30):
        cap = rng.choice([8, 64, 100])
        lengths = [rng.randint(1, cap) for _ in range(rng.randint(0, 200))]
        assert best_fit_decreasing(lengths, cap) == best_fit_decreasing_naive(lengths, cap), trial
    with pytest.raises(ValueError, match="item 1"):
        best_fit_decreasing([3, 9], 8)


def test_all_tokens_preserved_no_truncation() -> None:
    docs = random_docs(500, 64)
    packed = pack_documents(docs, seq_len=64, pad_id=PAD)
    assert Counter(map(tuple, rows_as_docs(packed))) == Counter(map(tuple, docs))  # each doc intact, in one row
    s = packed.stats
    assert s.n_split_docs == 0 and s.n_tokens == sum(map(len, docs)) and s.n_docs == 500
    assert (packed.input_ids_NT != PAD).sum().item() == s.n_tokens
    assert s.efficiency == pytest.approx(s.n_tokens / (len(packed) * 64))
    assert s.n_loss_tokens == s.n_tokens
    assert packed.input_ids_NT.shape == (s.n_rows, 64)
    # stored compact (12 bytes per token), widened per batch
    assert (packed.input_ids_NT.dtype, packed.labels_NT.dtype, packed.doc_ids_NT.dtype) == (torch.int32,) * 2 + (
        torch.int16,)
    from r1lab.train.data import take_rows

    batch = take_rows(packed, torch.arange(2), "cpu")
    assert all(t.dtype == torch.int64 for t in batch.values())
    assert torch.equal(batch["input_ids"], packed.input_ids_NT[:2].long())


def test_efficiency_beats_first_fit_and_lower_bound() -> None:
    docs = random_docs(2000, 500, seed=1)
    lengths = [len(d) for d in docs]
    packed = pack_documents(docs, seq_len=512, pad_id=PAD)
    assert packed.stats.n_rows <= first_fit_rows(lengths, 512)
    assert packed.stats.n_rows >= -(-sum(lengths) // 512)
    assert packed.stats.efficiency > 0.95


def test_doc_ids_position_ids_and_labels() -> None:
    docs = [[5, 6, 7], [8, 9], [10], [11, 12, 13, 14]]
    packed = pack_documents(docs, seq_len=6, pad_id=PAD)
    # BFD: 4 -> row0, 3 -> row1, 2 -> row0 (room 2), 1 -> row1
    assert packed.input_ids_NT.tolist() == [[11, 12, 13, 14, 8, 9], [5, 6, 7, 10, PAD, PAD]]
    assert packed.doc_ids_NT.tolist() == [[1, 1, 1, 1, 2, 2], [1, 1, 1, 2, 0, 0]]
    assert packed.position_ids_NT.tolist() == [[0, 1, 2, 3, 0, 1], [0, 1, 2, 0, 0, 0]]
    assert packed.labels_NT.tolist() == [[11, 12, 13, 14, 8, 9], [5, 6, 7, 10, -100, -100]]


def test_loss_masks_become_ignore_labels() -> None:
    docs = [([1, 2, 3, 4], [0, 0, 1, 1]), ([5, 6], [0, 1]), [7, 8, 9]]
    packed = pack_documents(docs, seq_len=5, pad_id=PAD)
    pairs = {
        t: lab
        for ids, labs in zip(packed.input_ids_NT.tolist(), packed.labels_NT.tolist())
        for t, lab in zip(ids, labs)
    }
    assert [pairs[t] for t in range(1, 10)] == [-100, -100, 3, 4, -100, 6, 7, 8, 9]
    assert packed.stats.n_loss_tokens == 6
    with pytest.raises(ValueError, match="doc 0: 2 ids but 1 loss-mask"):
        pack_documents([([1, 2], [1])], seq_len=4, pad_id=PAD)


def test_long_documents_split_and_counted(caplog: pytest.LogCaptureFixture) -> None:
    long_doc = list(range(1, 24))  # 23 tokens, seq_len 8 -> chunks 8, 8, 7
    with caplog.at_level(logging.INFO, logger="r1lab.data.packing"):
        packed = pack_documents([long_doc, [100, 101], []], seq_len=8, pad_id=PAD)
    s = packed.stats
    assert (s.n_split_docs, s.n_split_chunks, s.n_empty_docs) == (1, 3, 1)
    assert sorted(t for t in packed.input_ids_NT.flatten().tolist() if t != PAD) == long_doc + [100, 101]
    assert len(packed) == 4 and s.efficiency == pytest.approx(25 / 32)
    assert "efficiency 78.12%" in caplog.text and "1 split into 3 chunks" in caplog.text


def test_doc_attention_mask() -> None:
    doc_ids = torch.tensor([[1, 1, 2, 2, 2, 0]])
    mask = doc_attention_mask(doc_ids)
    assert mask.shape == (1, 1, 6, 6) and mask.dtype == torch.bool
    expected = torch.tensor(
        [
            [1, 0, 0, 0, 0, 0],
            [1, 1, 0, 0, 0, 0],
            [0, 0, 1, 0, 0, 0],
            [0, 0, 1, 1, 0, 0],
            [0, 0, 1, 1, 1, 0],
            [0, 0, 0, 0, 0, 1],
        ],
        dtype=torch.bool,
    )
    assert torch.equal(mask[0, 0], expected)
    # no NaN in SDPA with padding, and each document is attended to as if alone
    q_BHTD = torch.randn(1, 1, 6, 4)
    out = torch.nn.functional.scaled_dot_product_attention(q_BHTD, q_BHTD, q_BHTD, attn_mask=mask)
    assert torch.isfinite(out).all()
    alone = torch.nn.functional.scaled_dot_product_attention(
        q_BHTD[:, :, 2:5], q_BHTD[:, :, 2:5], q_BHTD[:, :, 2:5], is_causal=True
    )
    assert torch.allclose(out[:, :, 2:5], alone, atol=1e-6)


def test_next_token_targets_never_cross_documents() -> None:
    labels = torch.tensor([[11, 12, 13, 21, 22, -100]])
    doc_ids = torch.tensor([[1, 1, 1, 2, 2, 0]])
    assert next_token_targets(labels, doc_ids).tolist() == [[12, 13, -100, 22, -100, -100]]
    masked = torch.tensor([[-100, 12, 13, -100, 22, -100]])
    assert next_token_targets(masked, doc_ids).tolist() == [[12, 13, -100, 22, -100, -100]]


def test_batches_resume_and_cover_every_row() -> None:
    packed = pack_documents(random_docs(300, 30, seed=2), seq_len=32, pad_id=PAD)
    n = len(packed)
    full = list(batches(packed, batch_size=4, shuffle=True, seed=7))
    assert len(full) == num_batches(packed, 4) == -(-n // 4)
    rows = torch.cat([b["input_ids"] for b in full])
    assert sorted(map(tuple, rows.tolist())) == sorted(map(tuple, packed.input_ids_NT.tolist()))
    resumed = list(batches(packed, batch_size=4, shuffle=True, seed=7, start_index=5))
    assert len(resumed) == len(full) - 5
    for a, b in zip(full[5:], resumed):
        assert all(torch.equal(a[k], b[k]) for k in ("input_ids", "labels", "doc_ids", "position_ids"))
    other = next(batches(packed, batch_size=4, shuffle=True, seed=8))
    assert not torch.equal(other["input_ids"], full[0]["input_ids"])
    plain = next(batches(packed, batch_size=3, shuffle=False))
    assert torch.equal(plain["input_ids"], packed.input_ids_NT[:3])
    dropped = list(batches(packed, batch_size=7, shuffle=False, drop_last=True))
    assert len(dropped) == n // 7 and all(b["input_ids"].shape == (7, 32) for b in dropped)


def test_stream_packing_save_load(tmp_path: Path) -> None:
    docs = random_docs(250, 40, seed=3)
    parts = list(pack_stream(iter(docs), seq_len=48, pad_id=PAD, buffer_docs=100))
    assert len(parts) == 3 and [p.stats.n_docs for p in parts] == [100, 100, 50]
    whole = concat_packed(parts)
    assert whole.stats.n_docs == 250 and whole.stats.n_tokens == sum(map(len, docs))
    assert Counter(map(tuple, rows_as_docs(whole))) == Counter(map(tuple, docs))
    whole.save(tmp_path / "packed.safetensors")
    back = PackedData.load(tmp_path / "packed.safetensors")
    assert back.stats == whole.stats
    assert torch.equal(back.labels_NT, whole.labels_NT) and torch.equal(back.doc_ids_NT, whole.doc_ids_NT)
    assert IGNORE_INDEX not in back.input_ids_NT.tolist()[0]


def test_packing_speed_large() -> None:
    import time

    rng = random.Random(4)
    docs = [list(range(1, rng.randint(2, 200))) for _ in range(50_000)]  # ~5M tokens
    start = time.perf_counter()
    packed = pack_documents(docs, seq_len=1024, pad_id=PAD)
    assert time.perf_counter() - start < 15
    assert packed.stats.efficiency > 0.99


def test_model_uses_the_same_conventions() -> None:
    """The model's own mask / positions / loss agree with the references here on a packed batch."""
    transformer = pytest.importorskip("r1lab.model.transformer")
    packed = pack_documents(random_docs(60, 20, seed=5), seq_len=24, pad_id=PAD)
    batch = next(batches(packed, batch_size=8, shuffle=True, seed=1))
    doc_ids, labels = batch["doc_ids"], batch["labels"]
    assert torch.equal(transformer.segment_causal_mask(doc_ids), doc_attention_mask(doc_ids))
    assert torch.equal(transformer.positions_from_segments(doc_ids, batch["input_ids"]), batch["position_ids"])
    logits_BTV = torch.randn(*labels.shape, 1000)
    reference = torch.nn.functional.cross_entropy(
        logits_BTV.flatten(0, 1), next_token_targets(labels, doc_ids).flatten(), ignore_index=IGNORE_INDEX
    )
    model_loss = transformer.shifted_cross_entropy(logits_BTV, labels, doc_ids, shift=1)
    assert torch.allclose(model_loss, reference)


def test_join_row_documents_keeps_tokens_drops_boundaries() -> None:
    docs = random_docs(300, 40, seed=3)
    packed = pack_documents(docs, 64, PAD)
    joined = join_row_documents(packed, seed=0)
    assert joined.input_ids_NT.shape == packed.input_ids_NT.shape
    real = packed.doc_ids_NT != 0
    assert torch.equal(joined.doc_ids_NT, real.long())  # one sequence per row, padding still 0
    for r in range(len(packed)):
        n = int(real[r].sum())
        assert joined.position_ids_NT[r, :n].tolist() == list(range(n))
        # the row holds the same documents, each contiguous and intact, in some order
        before = sorted(tuple(packed.input_ids_NT[r][packed.doc_ids_NT[r] == k].tolist())
                        for k in packed.doc_ids_NT[r].unique().tolist() if k)
        seq = joined.input_ids_NT[r, :n].tolist()
        assert sum(len(d) for d in before) == n
        text = "," + ",".join(map(str, seq)) + ","
        assert all("," + ",".join(map(str, d)) + "," in text for d in before)  # each document contiguous
        assert sorted(seq) == sorted(x for d in before for x in d)
    # labels travel with their tokens (no loss mask here, so labels == input ids on real tokens)
    assert torch.equal(joined.labels_NT[joined.doc_ids_NT != 0], joined.input_ids_NT[joined.doc_ids_NT != 0])
    # the order is shuffled: best-fit decreasing puts each row's longest document first, the join does not always
    firsts_longest = 0
    multi = 0
    for r in range(len(packed)):
        ids = packed.doc_ids_NT[r]
        ks = [k for k in ids.unique().tolist() if k]
        if len(ks) < 2:
            continue
        multi += 1
        lengths = {k: int((ids == k).sum()) for k in ks}
        first = [tuple(packed.input_ids_NT[r][ids == k].tolist()) for k in ks]
        row = joined.input_ids_NT[r].tolist()
        first_doc = next(d for d in first if row[: len(d)] == list(d))
        firsts_longest += len(first_doc) == max(lengths.values())
    assert multi > 10 and firsts_longest < multi
    # deterministic in the seed
    assert torch.equal(join_row_documents(packed, seed=0).input_ids_NT, joined.input_ids_NT)
