"""Pieces every trainer shares: crash-safe checkpoints, exact resume (RNG states), config comparison, loss weights.

Checkpoint layout (one directory per saved step, under ``<out>/checkpoints/``)::

    step-000200/  config.json  model.safetensors  training_state.pt  train_config.json

A checkpoint is written into ``ckpt.tmp-XXXX`` in the same folder, every file fsynced, then renamed to
``step-NNNNNN`` (rename is atomic on POSIX) and the folder fsynced; only then are older checkpoints pruned. A run killed
at any instant therefore leaves either the previous complete checkpoint or the new one, never a half-written
``step-*`` directory; stale ``ckpt.tmp-*`` folders are removed by the next run. ``latest_checkpoint`` just picks the
highest complete ``step-*``.

``training_state.pt`` holds: optimizer and scheduler state dicts, step, data position, the RNG states (python,
numpy, torch CPU, torch CUDA) and any extra entries the trainer adds. The expert-routing biases live in the model
weights (``e_score_correction_bias``), so they are restored with the model.

Idea source: torchtitan / nanochat style trainers (step-numbered checkpoints, RNG capture); the atomic-rename
protocol is the standard POSIX recipe.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch


STEP_PREFIX = "step-"
TMP_PREFIX = "ckpt.tmp-"
STATE_FILE = "training_state.pt"
TRAIN_CONFIG_FILE = "train_config.json"


# ------------------------------------------------------------------------------------------------ RNG states
def rng_state() -> dict[str, Any]:
    """Every RNG the trainers touch: python ``random``, numpy, torch CPU and (if present) all CUDA devices."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restores what ``rng_state`` captured."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        # One state per GPU visible when saved; a resume may see fewer (other machine, CUDA_VISIBLE_DEVICES).
        for i, s in enumerate(state["cuda"][:torch.cuda.device_count()]):
            torch.cuda.set_rng_state(s, i)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


# ------------------------------------------------------------------------------------------------ files
def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def fsync_tree(path: Path) -> None:
    """fsync every file under ``path`` and the directories themselves."""
    for root, _, files in os.walk(path):
        for name in files:
            with open(Path(root) / name, "rb+") as fh:
                os.fsync(fh.fileno())
        _fsync_dir(Path(root))


def save_training_state(path: str | os.PathLike, state: Mapping[str, Any]) -> None:
    """``torch.save`` to a temp name, fsync, rename (atomic)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        torch.save(dict(state), fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def load_training_state(path: str | os.PathLike) -> dict[str, Any]:
    """Reads ``training_state.pt`` (trusted file written by ``save_training_state``)."""
    return torch.load(Path(path), map_location="cpu", weights_only=False)


def write_dir_atomic(final: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Run ``write(tmp_dir)`` into ``<parent>/ckpt.tmp-XXXX``, fsync it, then swap it in as ``final``.

    If ``final`` exists it is renamed aside first and removed only after the new directory is in place.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=TMP_PREFIX, dir=final.parent))
    try:
        write(tmp)
        fsync_tree(tmp)
        old = None
        if final.exists():
            old = final.with_name(f"{TMP_PREFIX}old-{final.name}-{os.getpid()}")
            os.replace(final, old)
        os.replace(tmp, final)
        _fsync_dir(final.parent)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def save_checkpoint(ckpt_root: str | os.PathLike, step: int, save_model: Callable[[Path], None],
                    training_state: Mapping[str, Any], train_config: Mapping[str, Any] | None = None,
                    keep_last: int = 2) -> Path:
    """Atomically write ``<ckpt_root>/step-NNNNNN`` (model via ``save_model(dir)``, ``training_state.pt``,
    ``train_config.json``), then delete all but the newest ``keep_last`` checkpoints. Returns the directory."""
    root = Path(ckpt_root)

    def write(tmp: Path) -> None:
        save_model(tmp)
        save_training_state(tmp / STATE_FILE, training_state)
        if train_config is not None:
            (tmp / TRAIN_CONFIG_FILE).write_text(json.dumps(dict(train_config), indent=2, default=str) + "\n")

    path = write_dir_atomic(root / f"{STEP_PREFIX}{step:06d}", write)
    for old in list_checkpoints(root)[:-keep_last] if keep_last > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return path


def list_checkpoints(ckpt_root: str | os.PathLike) -> list[Path]:
    """Complete checkpoints under ``ckpt_root``, oldest first."""
    root = Path(ckpt_root)
    if not root.is_dir():
        return []
    found = []
    for p in root.iterdir():
        numbered = p.name.startswith(STEP_PREFIX) and p.name[len(STEP_PREFIX):].isdigit()
        if numbered and (p / STATE_FILE).is_file():
            found.append(p)
    return sorted(found, key=lambda p: int(p.name[len(STEP_PREFIX):]))


def latest_checkpoint(ckpt_root: str | os.PathLike) -> Path | None:
    found = list_checkpoints(ckpt_root)
    return found[-1] if found else None


def remove_stale_tmp(ckpt_root: str | os.PathLike) -> int:
    """Delete ``ckpt.tmp-*`` leftovers of a killed run; returns how many."""
    root = Path(ckpt_root)
    n = 0
    if root.is_dir():
        for p in root.iterdir():
            if p.name.startswith(TMP_PREFIX):
                shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
                n += 1
    return n


# ------------------------------------------------------------------------------------------------ configs
def config_diff(saved: Mapping[str, Any], current: Mapping[str, Any], ignore: set[str] | frozenset[str] = frozenset()
                ) -> list[str]:
    """Human lines ``field: saved X, now Y`` for every field that differs (fields in ``ignore`` skipped).

    >>> config_diff({"lr": 0.001, "steps": 10}, {"lr": 0.002, "steps": 10})
    ['lr: saved 0.001, now 0.002']
    """
    out = []
    for key in sorted(set(saved) | set(current)):
        if key in ignore:
            continue
        a, b = saved.get(key, "<absent>"), current.get(key, "<absent>")
        if _norm(a) != _norm(b):
            out.append(f"{key}: saved {a!r}, now {b!r}")
    return out


def _norm(v: Any) -> Any:
    if isinstance(v, (list, tuple)):
        return [_norm(x) for x in v]
    if isinstance(v, dict):
        return {k: _norm(x) for k, x in v.items()}
    return v


class ResumeMismatchError(ValueError):
    """--resume found a checkpoint written with a different config; the message names the fields."""


# ------------------------------------------------------------------------------------------------ loss weights
def count_pairs(labels_BT: torch.Tensor, doc_ids_BT: torch.Tensor | None, shift: int) -> int:
    """Number of (t, t+shift) pairs that count in ``shifted_cross_entropy`` (same doc, label != -100)."""
    t = labels_BT.shape[1]
    if shift >= t:
        return 0
    ok = labels_BT[:, shift:] != -100
    if doc_ids_BT is not None:
        ok &= (doc_ids_BT[:, shift:] == doc_ids_BT[:, : t - shift]) & (doc_ids_BT[:, shift:] != 0)
    return int(ok.sum())


def loss_weight(n_local: int, n_global: int, world_size: int) -> float:
    """Weight for a micro-batch's *mean* loss so that the sum over micro-batches (and the DDP/FSDP gradient mean over
    ranks) is the mean over all ``n_global`` items of the optimizer step: ``n_local · world / n_global``.

    >>> loss_weight(30, 100, 2)
    0.6
    """
    return n_local * world_size / n_global if n_global > 0 else 0.0
