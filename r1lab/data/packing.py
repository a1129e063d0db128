"""Best-fit-decreasing packing of tokenised documents into fixed-length rows, with document-aware masks.

Idea: pretraining and SFT batches have a fixed shape N×T; concatenating whole documents into rows of T tokens without
cutting them (bin packing, best-fit decreasing: place each document, longest first, into the fullest row that still
has room) wastes few pad slots and never truncates a document that fits in a row. Documents longer than T are cut
into T-token chunks (counted in ``stats``). Packing with intra-document attention is how DeepSeek-V3 pretrains
(arXiv 2412.19437 §4.1: "document packing ... we do not incorporate cross-sample attention masking during training";
by default we *do* mask, as Llama 3 does, so a row never attends or trains across documents; ``join_row_documents``
gives V3's unmasked rows — pretraining's ``doc_mask=False``).

Conventions the model relies on:
- ``labels_NT`` are NOT shifted (HF convention: the model predicts labels[t+1] from position t); -100 on padding and
  wherever a loss mask is 0 (SFT prompts).
- ``doc_ids_NT``: 1..k within each row, 0 on padding. A next-token pair (t, t+1) counts only when doc_ids are equal
  and nonzero (``next_token_targets`` is the reference); attention is causal within equal doc_ids
  (``doc_attention_mask`` is the reference).
- ``position_ids_NT`` restart at 0 at every document (RoPE sees each document as if alone).

Legend: N rows, T = seq_len, B batch rows.
"""

from __future__ import annotations

import bisect
import heapq
import logging
import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

log = logging.getLogger(__name__)

IGNORE_INDEX = -100

# A document: token ids, or (token ids, loss mask of the same length with 1 = train on this token).
Doc = Sequence[int] | tuple[Sequence[int], Sequence[int]]


@dataclass
class PackStats:
    """Counts of one packing run; ``efficiency`` = real tokens / (rows × seq_len)."""

    n_docs: int
    n_empty_docs: int
    n_split_docs: int  # documents longer than seq_len, cut into chunks
    n_split_chunks: int  # chunks those documents became
    n_rows: int
    seq_len: int
    n_tokens: int
    n_loss_tokens: int
    efficiency: float

    def log_line(self) -> str:
        split = f", {self.n_split_docs} split into {self.n_split_chunks} chunks" if self.n_split_docs else ""
        return (
            f"packed {self.n_docs:,} docs{split} into {self.n_rows:,} rows × {self.seq_len}: "
            f"efficiency {100 * self.efficiency:.2f}% ({self.n_tokens:,} tokens, "
            f"{self.n_rows * self.seq_len - self.n_tokens:,} pad, {self.n_loss_tokens:,} with loss)"
        )


@dataclass
class PackedData:
    """Packed rows (N×T) and their statistics, stored compact: token ids and labels int32, document ids and positions
    int16 (int32 when T > 32,767) — 12 bytes per token instead of 32 in int64, which bounds what a corpus costs in
    memory; ``r1lab.train.data.take_rows`` widens a batch's rows to int64 on the way to the model."""

    input_ids_NT: torch.Tensor
    labels_NT: torch.Tensor
    doc_ids_NT: torch.Tensor
    position_ids_NT: torch.Tensor
    stats: PackStats

    def __len__(self) -> int:
        return self.input_ids_NT.shape[0]

    def save(self, path: str | Path) -> None:
        """Saves tensors + stats to one safetensors file."""
        import json

        from safetensors.torch import save_file

        tensors = {
            "input_ids": self.input_ids_NT.contiguous(),
            "labels": self.labels_NT.contiguous(),
            "doc_ids": self.doc_ids_NT.contiguous(),
            "position_ids": self.position_ids_NT.contiguous(),
        }
        save_file(tensors, str(path), metadata={"stats": json.dumps(asdict(self.stats))})

    @classmethod
    def load(cls, path: str | Path) -> PackedData:
        import json

        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            stats = PackStats(**json.loads(f.metadata()["stats"]))
            t = {k: f.get_tensor(k) for k in ("input_ids", "labels", "doc_ids", "position_ids")}
        return cls(t["input_ids"], t["labels"], t["doc_ids"], t["position_ids"], stats)


# --- bin packing -------------------------------------------------------------------------------------------------


def best_fit_decreasing(lengths: Sequence[int], capacity: int) -> list[list[int]]:
    """Bins (lists of item indices) from best-fit decreasing; every length must be in 1..capacity.

    Items go longest first (ties: lower index first) into the bin with the least remaining room that fits them
    (ties: the lowest bin index); a new bin opens when none fits. The search is a bisect over the sorted distinct
    remaining capacities (at most ``capacity`` of them), each holding a min-heap of bin indices: O(n log n).
    """
    _check_lengths(lengths, capacity)
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    caps: list[int] = []  # sorted distinct remaining capacities of open bins
    heaps: dict[int, list[int]] = {}  # remaining capacity -> min-heap of bin indices
    bins: list[list[int]] = []
    for i in order:
        size = lengths[i]
        j = bisect.bisect_left(caps, size)
        if j == len(caps):
            b, room = len(bins), capacity
            bins.append([])
        else:
            room = caps[j]
            b = heapq.heappop(heaps[room])
            if not heaps[room]:
                del heaps[room]
                caps.pop(j)
        bins[b].append(i)
        room -= size
        if room > 0:
            if room not in heaps:
                bisect.insort(caps, room)
                heaps[room] = []
            heapq.heappush(heaps[room], b)
    return bins


def best_fit_decreasing_naive(lengths: Sequence[int], capacity: int) -> list[list[int]]:
    """Readable twin of ``best_fit_decreasing`` (O(n × bins)); same tie-breaking, same result."""
    _check_lengths(lengths, capacity)
    bins: list[list[int]] = []
    room: list[int] = []
    for i in sorted(range(len(lengths)), key=lambda i: (-lengths[i], i)):
        fits = [(room[b], b) for b in range(len(bins)) if room[b] >= lengths[i]]
        if fits:
            b = min(fits)[1]
        else:
            b = len(bins)
            bins.append([])
            room.append(capacity)
        bins[b].append(i)
        room[b] -= lengths[i]
    return bins


def _check_lengths(lengths: Sequence[int], capacity: int) -> None:
    if capacity < 1:
        raise ValueError(f"capacity must be >= 1, got {capacity}")
    for i, n in enumerate(lengths):
        if not 1 <= n <= capacity:
            raise ValueError(f"item {i}: length {n} is outside 1..{capacity}")


# --- documents -> rows -------------------------------------------------------------------------------------------


def _split_doc(index: int, doc: Doc) -> tuple[list[int], list[int] | None]:
    if isinstance(doc, tuple):
        if len(doc) != 2:
            raise ValueError(f"doc {index}: expected ids or (ids, loss_mask), got a tuple of {len(doc)}")
        ids, mask = list(doc[0]), [int(m) for m in doc[1]]
        if len(ids) != len(mask):
            raise ValueError(f"doc {index}: {len(ids)} ids but {len(mask)} loss-mask values")
        return ids, mask
    return list(doc), None


def pack_documents(docs: Sequence[Doc], seq_len: int, pad_id: int) -> PackedData:
    """Packs documents (ids, or (ids, loss_mask)) into rows of ``seq_len`` tokens with best-fit decreasing.

    No document of length <= seq_len is cut; longer ones become ceil(len / seq_len) chunks packed like any other.
    Empty documents are dropped (counted). Logs ``stats.log_line()`` at INFO.
    """
    if seq_len < 1:
        raise ValueError(f"seq_len must be >= 1, got {seq_len}")
    pieces: list[tuple[list[int], list[int] | None]] = []
    n_empty = n_split = n_chunks = 0
    for index, doc in enumerate(docs):
        ids, mask = _split_doc(index, doc)
        if not ids:
            n_empty += 1
            continue
        if len(ids) > seq_len:
            n_split += 1
            for s in range(0, len(ids), seq_len):
                n_chunks += 1
                pieces.append((ids[s : s + seq_len], None if mask is None else mask[s : s + seq_len]))
        else:
            pieces.append((ids, mask))
    bins = best_fit_decreasing([len(ids) for ids, _ in pieces], seq_len)
    packed = _fill_rows(pieces, bins, seq_len, pad_id)
    n_tokens = sum(len(ids) for ids, _ in pieces)
    n_rows = len(bins)
    packed.stats = PackStats(
        n_docs=len(docs),
        n_empty_docs=n_empty,
        n_split_docs=n_split,
        n_split_chunks=n_chunks,
        n_rows=n_rows,
        seq_len=seq_len,
        n_tokens=n_tokens,
        n_loss_tokens=int((packed.labels_NT != IGNORE_INDEX).sum()),
        efficiency=n_tokens / (n_rows * seq_len) if n_rows else 0.0,
    )
    log.info(packed.stats.log_line())
    return packed


def _fill_rows(
    pieces: list[tuple[list[int], list[int] | None]], bins: list[list[int]], seq_len: int, pad_id: int
) -> PackedData:
    n = len(bins)
    small = np.int16 if seq_len <= np.iinfo(np.int16).max else np.int32  # doc ids and positions are < seq_len
    input_ids = np.full((n, seq_len), pad_id, dtype=np.int32)
    labels = np.full((n, seq_len), IGNORE_INDEX, dtype=np.int32)
    doc_ids = np.zeros((n, seq_len), dtype=small)
    position_ids = np.zeros((n, seq_len), dtype=small)
    for r, members in enumerate(bins):
        at = 0
        for k, p in enumerate(members, start=1):
            ids, mask = pieces[p]
            ids_np = np.asarray(ids, dtype=np.int64)
            end = at + len(ids)
            input_ids[r, at:end] = ids_np
            labels[r, at:end] = ids_np if mask is None else np.where(np.asarray(mask) != 0, ids_np, IGNORE_INDEX)
            doc_ids[r, at:end] = k
            position_ids[r, at:end] = np.arange(len(ids))
            at = end
    empty = PackStats(0, 0, 0, 0, 0, seq_len, 0, 0, 0.0)
    return PackedData(
        torch.from_numpy(input_ids),
        torch.from_numpy(labels),
        torch.from_numpy(doc_ids),
        torch.from_numpy(position_ids),
        empty,
    )


def join_row_documents(packed: PackedData, seed: int) -> PackedData:
    """The same rows with their documents in a seeded random order and **no document boundaries**: each row
    becomes one sequence (doc id 1 on every real token, positions 0..n-1, attention and next-token pairs across
    documents), as DeepSeek-V3 pretrains (§4.1: packing "for data integrity" without cross-sample attention
    masking). Padding stays at the row end with doc id 0. The shuffle matters: best-fit decreasing places the
    longest document of a row first, so without it long documents would always sit at the start of the context.

    >>> rows = pack_documents([[5, 6, 7], [8, 9]], seq_len=6, pad_id=0)
    >>> j = join_row_documents(rows, seed=0)
    >>> j.doc_ids_NT.tolist(), j.position_ids_NT.tolist()
    ([[1, 1, 1, 1, 1, 0]], [[0, 1, 2, 3, 4, 0]])
    >>> sorted(j.input_ids_NT[0, :5].tolist()) == [5, 6, 7, 8, 9]
    True
    """
    rng = np.random.default_rng(seed)
    ids_NT, labels_NT, docs_NT = (t.numpy() for t in (packed.input_ids_NT, packed.labels_NT, packed.doc_ids_NT))
    input_ids, labels = ids_NT.copy(), labels_NT.copy()
    doc_ids = np.zeros_like(docs_NT)
    position_ids = np.zeros_like(docs_NT)
    for r in range(ids_NT.shape[0]):
        row = docs_NT[r]
        n_real = int((row != 0).sum())
        segments = [np.flatnonzero(row == k) for k in np.unique(row[row != 0])]
        order = np.concatenate([segments[i] for i in rng.permutation(len(segments))]) if segments else []
        input_ids[r, :n_real] = ids_NT[r, order]
        labels[r, :n_real] = labels_NT[r, order]
        doc_ids[r, :n_real] = 1
        position_ids[r, :n_real] = np.arange(n_real)
    return PackedData(torch.from_numpy(input_ids), torch.from_numpy(labels), torch.from_numpy(doc_ids),
                      torch.from_numpy(position_ids), packed.stats)


def pack_stream(docs: Iterable[Doc], seq_len: int, pad_id: int, buffer_docs: int = 10_000) -> Iterator[PackedData]:
    """Packs a document stream of any size buffer by buffer (``buffer_docs`` documents each), best-fit within a
    buffer. Larger buffers pack tighter; memory stays bounded.
    """
    if buffer_docs < 1:
        raise ValueError(f"buffer_docs must be >= 1, got {buffer_docs}")
    buf: list[Doc] = []
    for doc in docs:
        buf.append(doc)
        if len(buf) >= buffer_docs:
            yield pack_documents(buf, seq_len, pad_id)
            buf = []
    if buf:
        yield pack_documents(buf, seq_len, pad_id)


def concat_packed(parts: Sequence[PackedData]) -> PackedData:
    """Joins packed parts (same seq_len) into one, summing their statistics."""
    if not parts:
        raise ValueError("nothing to concatenate")
    seq_len = parts[0].stats.seq_len
    if any(p.stats.seq_len != seq_len for p in parts):
        raise ValueError("packed parts have different seq_len")
    s = [p.stats for p in parts]
    n_rows, n_tokens = sum(x.n_rows for x in s), sum(x.n_tokens for x in s)
    stats = PackStats(
        n_docs=sum(x.n_docs for x in s),
        n_empty_docs=sum(x.n_empty_docs for x in s),
        n_split_docs=sum(x.n_split_docs for x in s),
        n_split_chunks=sum(x.n_split_chunks for x in s),
        n_rows=n_rows,
        seq_len=seq_len,
        n_tokens=n_tokens,
        n_loss_tokens=sum(x.n_loss_tokens for x in s),
        efficiency=n_tokens / (n_rows * seq_len) if n_rows else 0.0,
    )
    cat = lambda name: torch.cat([getattr(p, name) for p in parts])  # noqa: E731
    return PackedData(cat("input_ids_NT"), cat("labels_NT"), cat("doc_ids_NT"), cat("position_ids_NT"), stats)


# --- references for the model ------------------------------------------------------------------------------------


def doc_attention_mask(doc_ids_BT: torch.Tensor) -> torch.Tensor:
    """Bool mask B×1×T×T, True = query t may attend key s: same document, s <= t, not padding.

    A padding query (doc id 0) attends to itself only, so softmax never sees an all-masked row (no NaN).
    """
    T = doc_ids_BT.shape[-1]
    q_BT1, k_B1T = doc_ids_BT[:, :, None], doc_ids_BT[:, None, :]
    causal_TT = torch.ones(T, T, dtype=torch.bool, device=doc_ids_BT.device).tril()
    real_BTT = (q_BT1 == k_B1T) & causal_TT & (q_BT1 != 0)
    pad_self_BTT = (q_BT1 == 0) & torch.eye(T, dtype=torch.bool, device=doc_ids_BT.device)
    return (real_BTT | pad_self_BTT)[:, None]


def next_token_targets(labels_BT: torch.Tensor, doc_ids_BT: torch.Tensor) -> torch.Tensor:
    """Targets aligned with positions: target[t] = labels[t+1] if t and t+1 are in the same (nonzero) document,
    else -100; the last position is -100. Cross-entropy of logits[:, t] vs target[:, t] is the packed LM loss.
    """
    from r1lab.model.loss import shifted_targets  # the model's loss uses the same targets (shift 1)

    return shifted_targets(labels_BT, doc_ids_BT, 1)


# --- batches -----------------------------------------------------------------------------------------------------


def num_batches(packed: PackedData, batch_size: int, drop_last: bool = False) -> int:
    n = len(packed)
    return n // batch_size if drop_last else math.ceil(n / batch_size)


def batches(
    packed: PackedData,
    batch_size: int,
    shuffle: bool = True,
    seed: int = 0,
    start_index: int = 0,
    drop_last: bool = False,
) -> Iterator[dict[str, torch.Tensor]]:
    """One epoch of batches {"input_ids", "labels", "doc_ids", "position_ids"} (each B×T), resumable.

    The row order depends only on (seed, shuffle), so ``start_index=i`` yields exactly the batches i, i+1, ... of
    the same epoch that an uninterrupted run would have seen; pass ``seed + epoch`` for a new order per epoch.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    n = len(packed)
    if shuffle:
        order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    else:
        order = torch.arange(n)
    for b in range(max(start_index, 0), num_batches(packed, batch_size, drop_last)):
        idx = order[b * batch_size : (b + 1) * batch_size]
        yield {  # int64, as the model and the losses take them (rows are stored compact)
            "input_ids": packed.input_ids_NT[idx].long(),
            "labels": packed.labels_NT[idx].long(),
            "doc_ids": packed.doc_ids_NT[idx].long(),
            "position_ids": packed.position_ids_NT[idx].long(),
        }
