"""Pretraining data: corpus → tokenizer → tokenised documents → held-out split → FIM → best-fit packed rows, and the
deterministic global row order that makes resuming and data parallelism exact.

Sources: DeepSeek-V3 §4.1 (document packing, FIM at rate 0.1 in PSM mode); packing and streaming come from
``r1lab.data.packing`` / ``r1lab.data.stream``. The global row order is a concatenation of seeded permutations (one per
epoch): the rows of optimizer step s are positions [s·G, (s+1)·G) of that sequence (G = global batch rows), so a run's
data position is just its step, and a rank's rows are a fixed slice of each global micro-batch.

Legend: N rows, T seq_len, G global rows per optimizer step.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from r1lab.data.corpus import CODE_SWITCH_SHARE
from r1lab.data.packing import PackedData, join_row_documents, pack_documents


@dataclass
class PretrainData:
    train: PackedData
    heldout: PackedData | None
    corpus_paths: list[str]
    tokenizer_dir: str
    n_docs: int
    n_heldout_docs: int


def ensure_corpus(paths: list[str], out_dir: Path, n_per_family: int, levels: list[int], seed: int,
                  code_switch_share: float = CODE_SWITCH_SHARE) -> list[str]:
    """The user's corpus files, or the built-in one (``r1lab.data.corpus.build_corpus``) written to
    ``out_dir/corpus.jsonl`` (reused when it exists)."""
    if paths:
        return [str(p) for p in paths]
    from r1lab.data.corpus import build_corpus

    path = out_dir / "corpus.jsonl"
    if not path.exists():
        stats = build_corpus(path, n_per_family=n_per_family, difficulty_levels=levels, seed=seed,
                             code_switch_share=code_switch_share)
        print(f"built-in corpus: {stats['documents']:,} documents ({stats['chars_total']:,} chars) → {path}")
    return [str(path)]


def ensure_tokenizer(tokenizer_dir: str | None, corpus: list[str], out_dir: Path, vocab_size: int) -> str:
    """A tokenizer directory: the given one, or one trained on the corpus into ``out_dir/tokenizer`` (reused)."""
    if tokenizer_dir:
        return tokenizer_dir
    from r1lab.data.tokenizer import train_from_files

    path = out_dir / "tokenizer"
    if not (path / "tokenizer.json").exists():
        train_from_files(corpus, vocab_size, path)
        print(f"trained a byte-level BPE tokenizer (target vocab {vocab_size}) → {path}")
    return str(path)


def heldout_mask(n_docs: int, frac: float, seed: int) -> list[bool]:
    """Which documents are held out: a seeded coin per document (deterministic, independent of packing).

    >>> sum(heldout_mask(1000, 0.1, 0)) in range(70, 130)
    True
    """
    if not 0.0 <= frac < 1.0:
        raise ValueError(f"eval_frac must be in [0, 1), got {frac}")
    rng = random.Random(f"r1lab.pretrain.heldout:{seed}")
    return [rng.random() < frac for _ in range(n_docs)]


def prepare_data(cfg: Any, tokenizer: Any, corpus: list[str], tokenizer_dir: str, log=print) -> PretrainData:
    """Tokenise (streaming), split off held-out documents, apply FIM to training documents, pack both."""
    from r1lab.data.stream import tokenize_documents

    docs = list(tokenize_documents(corpus, tokenizer, text_field=cfg.text_field))
    mask = heldout_mask(len(docs), cfg.eval_frac, cfg.seed)
    train_docs = [d for d, h in zip(docs, mask) if not h]
    held_docs = [d for d, h in zip(docs, mask) if h]
    if not train_docs:
        raise ValueError(f"corpus {corpus}: no training documents left after holding out {cfg.eval_frac:.0%}")
    if cfg.fim_rate > 0:
        train_docs = _with_fim(train_docs, tokenizer, cfg.fim_rate, cfg.seed, log)
    train = pack_documents(train_docs, cfg.seq_len, tokenizer.pad_id)
    log(f"train: {train.stats.log_line()}")
    held = None
    if held_docs:
        held = pack_documents(held_docs, cfg.seq_len, tokenizer.pad_id)
        log(f"held-out: {held.stats.log_line()}")
    if not getattr(cfg, "doc_mask", True):
        train = join_row_documents(train, cfg.seed)
        held = None if held is None else join_row_documents(held, cfg.seed + 1)
        log("doc_mask=False: documents of a row form one sequence (V3 §4.1: no cross-sample masking)")
    return PretrainData(train, held, corpus, tokenizer_dir, len(docs), len(held_docs))


def _with_fim(docs: list[list[int]], tokenizer: Any, rate: float, seed: int, log) -> list[list[int]]:
    try:
        from r1lab.data.fim import fim_documents, fim_token_ids
    except ImportError:  # pragma: no cover - the module exists in this repo
        log("fim: r1lab.data.fim not available; FIM disabled")
        return docs
    try:
        ids = fim_token_ids(tokenizer)
    except ValueError as err:
        log(f"fim: {err}; FIM disabled")
        return docs
    return list(fim_documents(docs, ids, rate=rate, seed=seed))


class RowOrder:
    """Infinite seeded row order over ``n_rows`` packed rows: epoch e is ``randperm(n_rows, seed + e)``."""

    def __init__(self, n_rows: int, seed: int):
        if n_rows < 1:
            raise ValueError("no packed rows to train on")
        self.n_rows, self.seed = n_rows, seed
        self._cache: dict[int, torch.Tensor] = {}

    def _perm(self, epoch: int) -> torch.Tensor:
        if epoch not in self._cache:
            if len(self._cache) > 4:
                self._cache.clear()
            g = torch.Generator().manual_seed(self.seed + epoch)
            self._cache[epoch] = torch.randperm(self.n_rows, generator=g)
        return self._cache[epoch]

    def rows(self, start: int, count: int) -> torch.Tensor:
        """Row indices at global positions start .. start+count-1."""
        out = []
        pos = start
        while pos < start + count:
            epoch, offset = divmod(pos, self.n_rows)
            take = min(self.n_rows - offset, start + count - pos)
            out.append(self._perm(epoch)[offset: offset + take])
            pos += take
        return torch.cat(out)

    def epoch_at(self, position: int) -> float:
        return position / self.n_rows


def take_rows(packed: PackedData, rows: torch.Tensor, device: torch.device | str) -> dict[str, torch.Tensor]:
    """The model inputs of the given packed rows, on ``device``, as int64 (rows are stored compact: ``PackedData``)."""
    return {
        "input_ids": packed.input_ids_NT[rows].to(device, torch.long, non_blocking=True),
        "labels": packed.labels_NT[rows].to(device, torch.long, non_blocking=True),
        "doc_ids": packed.doc_ids_NT[rows].to(device, torch.long, non_blocking=True),
        "position_ids": packed.position_ids_NT[rows].to(device, torch.long, non_blocking=True),
    }
