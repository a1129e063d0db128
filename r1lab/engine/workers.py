"""Data-parallel generation on a CPU: one ``LLM.generate`` call split by prompt over the calling process and helper
processes, each running the engine on its own copy of the model with 1 thread (cores ÷ workers).

Why: a decode step of a small model on a CPU is bound by per-operation overhead, not arithmetic, so a second thread
barely helps and a second process doubles the throughput. Measured on the 2-core sandbox (AMD EPYC, 2026-11-26,
the speedrun's R1 model, 32 prompts × 4 samples at T 0.6): 16.6 s at 2 threads, 15.3 s at 1 thread, and two such
jobs side by side at 1 thread each 16.1 s; GRPO-sized calls (8 prompts × 8) take 2.45 s at 2 threads and half of
them 1.33 s at 1 thread (``docs/benchmarks.md``, sixteenth session).

How:
- Helpers are spawned (``torch.multiprocessing``, "spawn") once per process, lazily, and serve every ``LLM`` of the
  process in turn; they exit when the parent's end of their pipe closes (the parent exited or was killed).
- Each ``LLM`` keeps a mirror of its weights in shared memory. Before every parallel call the model's current weights
  are copied into it (so the samples follow a trainer's optimizer steps, as the in-process engine does by holding the
  module); a helper builds the model from its config once per ``LLM`` and takes the mirror's tensors as its own.
- Prompt i goes to worker i mod W (the calling process is worker 0); a prompt's n samples stay together (one prefill);
  outputs come back in prompt order.
- Seeded requests sample one stream per (prompt, sample) (``params.stream_seed``), so the tokens do not depend on
  which process drew them; only float rounding of differently sized batches differs from a one-process run.
  Unseeded requests draw from each worker's generator, seeded from the ``LLM``'s.
- Anything a helper cannot do (a model it cannot rebuild, a crashed process) is logged once and that LLM's calls run
  in the calling process: parallelism changes what is returned by float rounding at most.

``workers`` (``LLM(workers=...)``): an int, or None = the ``R1LAB_WORKERS`` environment variable (an int or "auto" =
the usable cores, at most ``MAX_AUTO``, divided among torchrun's local ranks, at most torch's thread count), 1 when
unset. The ``r1lab`` command sets it to "auto"; library code stays single-process unless asked. Helpers are started
with "spawn", which imports the caller's main module again: a script that asks for workers > 1 needs the usual
``if __name__ == "__main__":`` guard around its work (the ``r1lab`` command and ``python -m r1lab`` have it).
"""

from __future__ import annotations

import atexit
import logging
import os
import traceback
from collections import OrderedDict
from typing import Any

import torch
from torch import nn

log = logging.getLogger(__name__)

ENV = "R1LAB_WORKERS"
MAX_AUTO = 8
MIN_SEQUENCES = 16  # smaller calls stay in the calling process (a round trip costs more than they gain)
KEEP_REPLICAS = 4  # models a helper keeps built (LLMs used in turn, e.g. a GRPO policy and a quick-eval engine)


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def resolve_workers(workers: int | str | None, threads: int | None = None) -> int:
    """The worker count for ``workers`` (see the module docstring); "auto" also takes at most ``threads`` workers
    (a process told to use 1 thread stays on one core).

    >>> resolve_workers(3), resolve_workers("1"), resolve_workers("auto", threads=1)
    (3, 1, 1)
    >>> 1 <= resolve_workers("auto") <= MAX_AUTO
    True
    """
    if workers is None:
        workers = os.environ.get(ENV, "1")
    if isinstance(workers, str):
        text = workers.strip().lower()
        if text == "auto":
            ranks = int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1)
            return max(1, min(MAX_AUTO, usable_cores() // max(ranks, 1), threads or MAX_AUTO))
        try:
            workers = int(text)
        except ValueError:
            raise ValueError(f"workers must be a positive integer or 'auto', got {workers!r} "
                             f"(from {ENV} if not passed)") from None
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    return workers


def deal(n_items: int, n_workers: int) -> list[list[int]]:
    """Item indices per worker, round robin (worker w gets w, w + W, …).

    >>> deal(5, 2)
    [[0, 2, 4], [1, 3]]
    """
    return [list(range(w, n_items, n_workers)) for w in range(n_workers)]


def shm_free_bytes(path: str = "/dev/shm") -> int | None:
    """Free bytes of the shared-memory file system (None where there is none to ask)."""
    try:
        st = os.statvfs(path)
    except OSError:
        return None
    return st.f_bavail * st.f_frsize


def shared_mirror(model: nn.Module) -> dict[str, torch.Tensor]:
    """A shared-memory copy of ``model.state_dict()``; tied entries (one tensor under two names) stay one tensor.
    RuntimeError when /dev/shm lacks room for it (containers often give it 64 MB; touching an overfull one would
    kill the process with SIGBUS, so the caller falls back to one process instead)."""
    state = model.state_dict()
    need = sum(t.numel() * t.element_size() for t in {t.data_ptr(): t for t in state.values()}.values())
    free = shm_free_bytes()
    if free is not None and free < 2 * need + (64 << 20):
        raise RuntimeError(f"/dev/shm has {free >> 20} MiB free, the weights' mirror needs {need >> 20} MiB "
                           "(with room to spare)")
    mirror: dict[str, torch.Tensor] = {}
    by_ptr: dict[tuple[int, tuple[int, ...]], torch.Tensor] = {}
    for name, t in state.items():
        key = (t.data_ptr(), tuple(t.shape))
        if key not in by_ptr:
            by_ptr[key] = t.detach().to("cpu", copy=True).contiguous().share_memory_()
        mirror[name] = by_ptr[key]
    return mirror


@torch.no_grad()
def refresh_mirror(model: nn.Module, mirror: dict[str, torch.Tensor]) -> None:
    """Copy the model's current weights into its mirror (raises KeyError/RuntimeError if they no longer match)."""
    for name, t in model.state_dict().items():
        mirror[name].copy_(t)


def build_replica(spec: dict[str, Any]):
    """The LLM a helper runs for one parent LLM: the model rebuilt from its config with the mirror's tensors."""
    from .llm import LLM

    if spec["arch"] == "deepseek":
        from ..model import DeepSeekV3ForCausalLM

        model = DeepSeekV3ForCausalLM(spec["config"], init_weights=False)
    else:
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_config(spec["config"])
    model.load_state_dict(spec["state"], strict=True, assign=True)
    if getattr(spec["config"], "tie_word_embeddings", False) and hasattr(model, "tie_weights"):
        model.tie_weights()
    return LLM(model.eval(), tokenizer=spec["tokenizer"], device="cpu", workers=1, **spec["llm_kwargs"])


def helper_main(conn, threads: int) -> None:
    """A helper's loop: every message gets exactly one reply, ("ok", value) or ("error", traceback text)."""
    torch.set_num_threads(threads)
    try:
        from r1lab.allocator import keep_freed_memory

        keep_freed_memory()  # the same malloc settings as the r1lab command
    except ImportError:  # pragma: no cover
        pass
    replicas: OrderedDict[int, Any] = OrderedDict()
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            return
        op, key = msg[0], msg[1]
        try:
            if op == "close":
                return
            if op == "load":
                replicas[key] = build_replica(msg[2])
                while len(replicas) > KEEP_REPLICAS:
                    replicas.popitem(last=False)
                reply: Any = None
            elif op == "generate":
                llm = replicas[key]
                replicas.move_to_end(key)
                ids, params, seed = msg[2], msg[3], msg[4]
                llm._generator.manual_seed(seed)
                outs = llm.generate(prompt_token_ids=ids, sampling_params=params)
                reply = (outs, llm.stats)
            else:
                raise ValueError(f"unknown message {op!r}")
            conn.send(("ok", reply))
        except Exception:  # noqa: BLE001 - reported to the parent, which falls back to running the shard itself
            try:
                conn.send(("error", traceback.format_exc()))
            except (BrokenPipeError, OSError):
                return


class HelperError(RuntimeError):
    """A helper could not serve a request (its traceback is the message)."""


class Pool:
    """The process's helpers (W − 1 of them for W workers); see the module docstring."""

    def __init__(self, helpers: int, threads: int) -> None:
        ctx = torch.multiprocessing.get_context("spawn")
        self.threads = threads
        self.conns, self.procs = [], []
        self.loaded: list[set[int]] = []
        for _ in range(helpers):
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=helper_main, args=(child, threads), daemon=True, name="r1lab-engine-helper")
            proc.start()
            child.close()
            self.conns.append(parent)
            self.procs.append(proc)
            self.loaded.append(set())

    @property
    def size(self) -> int:
        return len(self.conns)

    def _call_all(self, messages: list[tuple | None]) -> list[Any]:
        """Send each helper its message (None: nothing), then gather the replies; HelperError on any failure."""
        sent = []
        for conn, msg in zip(self.conns, messages):
            if msg is not None:
                conn.send(msg)
                sent.append(conn)
            else:
                sent.append(None)
        return [self._reply(conn) if conn is not None else None for conn in sent]

    @staticmethod
    def _reply(conn) -> Any:
        try:
            status, value = conn.recv()
        except (EOFError, OSError) as err:
            raise HelperError(f"an engine helper process exited ({err})") from None
        if status != "ok":
            raise HelperError(value)
        return value

    def ensure_loaded(self, key: int, spec_fn) -> None:
        """Build the replica for LLM ``key`` in every helper that does not have it (in parallel)."""
        need = [key not in s for s in self.loaded]
        if not any(need):
            return
        spec = spec_fn()
        self._call_all([("load", key, spec) if n else None for n in need])
        for s in self.loaded:
            s.add(key)

    def start(self, key: int, shards: list[tuple[list[list[int]], Any, int]]) -> None:
        """Send helper h its shard (prompt ids, sampling params, seed); ``collect`` gathers the results."""
        for conn, (ids, params, seed) in zip(self.conns, shards):
            conn.send(("generate", key, ids, params, seed))

    def collect(self) -> list[Any]:
        return [self._reply(conn) for conn in self.conns]

    def close(self) -> None:
        for conn in self.conns:
            try:
                conn.send(("close", 0))
                conn.close()
            except (BrokenPipeError, OSError):
                pass
        for proc in self.procs:
            proc.join(timeout=5)
            if proc.is_alive():
                proc.kill()
        self.conns, self.procs, self.loaded = [], [], []


_POOL: Pool | None = None


def get_pool(workers: int, threads: int) -> Pool:
    """The process-wide pool with ``workers`` − 1 helpers (restarted if the count or threads changed)."""
    global _POOL
    if _POOL is not None and (_POOL.size != workers - 1 or _POOL.threads != threads
                              or not all(p.is_alive() for p in _POOL.procs)):
        _POOL.close()
        _POOL = None
    if _POOL is None:
        _POOL = Pool(workers - 1, threads)
    return _POOL


def drop_pool() -> None:
    """Stop the helpers (also at interpreter exit)."""
    global _POOL
    if _POOL is not None:
        _POOL.close()
        _POOL = None


atexit.register(drop_pool)
