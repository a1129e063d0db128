"""The engine's front door, shaped after vLLM's offline API: ``LLM(model).generate(prompts, SamplingParams(...))``.

Three backends behind one API, chosen once at construction:
- DeepSeek-V3 models (ours): MLA latent cache, naive prefill + absorbed decode (``runner.py``), continuous batching
  (``scheduler.py``), on-device sampling (``sampler.py``), optional MTP speculative decoding (``speculative.py``).
- Llama-family transformers models (Qwen2, Qwen3, Llama, Mistral without sliding windows): the same loop over the
  engine's own K/V cache (``dense.py``), CUDA graphs included.
- Any other local transformers causal LM, or any with ``hf_backend=True``: ``hf_backend.py``, transformers' own
  forward and cache, batched with left padding — the reference path.

Weights are held by reference: ``LLM(model)`` and ``LLM.update_weights(model)`` keep the very ``nn.Module`` given, so a
trainer that owns the policy (GRPO) shares its parameters with the engine at no cost; after an optimizer step the next
``generate`` already samples from the new policy. ``update_weights(state_dict)`` copies tensors in place instead.
During ``generate`` the model is switched to eval mode (MoE token counts are not polluted) and restored afterwards.

Deliberate difference from vLLM: ``CompletionOutput.logprobs`` are the raw (temperature 1, untruncated) fp32
log-probabilities of the sampled tokens — π_old for GRPO — see ``params.py``.
"""

from __future__ import annotations

import itertools
import json
import logging
import time
from collections.abc import Iterator
from collections.abc import Sequence as Seq
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..model import DeepSeekV3ForCausalLM
from .cache import LatentCache, batch_bucket, bucket
from .dense import DenseRunner, unsupported_reason
from .params import (ContextLengthError, GenerationStats, RequestOutput, SamplingParams, resolve_max_model_len,
                     stream_seed)
from .runner import DeepSeekRunner
from .sampler import RowNoise, RowParams, sample
from .scheduler import Scheduler, Sequence
from .speculative import catch_up_prompt, speculative_round
from .workers import (MIN_SEQUENCES, HelperError, deal, drop_pool, get_pool, refresh_mirror, resolve_workers,
                      shared_mirror)

log = logging.getLogger(__name__)

DEFAULT_MAX_MODEL_LEN = 8192  # cap when the config allows more (the cache is preallocated)
_KEYS = itertools.count()
# Cache slots when not given (CPU, CUDA): on a CPU a decode step of a small model costs nearly the same for 64 rows as
# for 256, so more slots finish a large request sooner: 84 prompts × 4 samples with the speedrun's R1-Zero model,
# 9.00 s at 64 slots, 4.86 s at 256 (benchmarks/cpu_sampling.py, sixteenth session). On CUDA every batch bucket is
# a CUDA graph.
DEFAULT_SLOTS = {"cpu": 256, "cuda": 64}


def fit_slots(slots: int, bytes_per_slot: int, budget: int) -> int:
    """Cache slots (one more is the scratch row) that fit in ``budget`` bytes: ``slots`` if they fit, else as many as
    do, at least 1.

    >>> fit_slots(64, 100, 10_000), fit_slots(64, 1000, 10_000), fit_slots(64, 10**6, 10)
    (64, 9, 1)
    """
    return max(1, min(slots, budget // max(bytes_per_slot, 1) - 1))


def available_ram() -> int | None:
    """MemAvailable from /proc/meminfo in bytes (None where there is no such file)."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _load_model(src: Any, device: torch.device, dtype: torch.dtype | None) -> tuple[nn.Module, Path | None]:
    if isinstance(src, nn.Module):
        return src, None
    path = Path(src)
    cfg_file = path / "config.json"
    if not cfg_file.is_file():
        raise FileNotFoundError(f"{path}: no config.json (expected a model directory)")
    model_type = json.loads(cfg_file.read_text(encoding="utf-8")).get("model_type")
    if dtype is None:
        dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    if model_type == "deepseek_v3":
        return DeepSeekV3ForCausalLM.from_pretrained(path, dtype=dtype, device=str(device)), path
    from transformers import AutoModelForCausalLM
    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype, local_files_only=True)
    return model.to(device), path


def _load_tokenizer(tok: Any, directory: Path | None):
    """Our ``Tokenizer`` wrapper where possible; any object with encode/decode otherwise; None without one."""
    if tok is None:
        if directory is None or not any((directory / f).exists() for f in ("tokenizer.json", "tokenizer_config.json")):
            return None
        tok = directory
    try:
        from ..data.tokenizer import Tokenizer, load_tokenizer
    except ImportError:  # pragma: no cover - the data layer is optional for the engine
        Tokenizer = load_tokenizer = None
    if load_tokenizer is not None and (isinstance(tok, (str, Path, Tokenizer)) or hasattr(tok, "eos_token_id")):
        return load_tokenizer(tok)
    if isinstance(tok, (str, Path)):
        from transformers import AutoTokenizer
        return AutoTokenizer.from_pretrained(str(tok), local_files_only=True)
    if not (hasattr(tok, "encode") and hasattr(tok, "decode")):
        raise TypeError(f"tokenizer must be a directory or have encode/decode, got {type(tok).__name__}")
    return tok


def _eos_ids(model: nn.Module, tokenizer: Any) -> set[int]:
    ids: set[int] = set()
    for source in (getattr(tokenizer, "eos_id", None), getattr(tokenizer, "eos_token_id", None),
                   getattr(model.config, "eos_token_id", None),
                   getattr(getattr(model, "generation_config", None), "eos_token_id", None)):
        if isinstance(source, int):
            ids.add(source)
        elif isinstance(source, (list, tuple)):
            ids.update(int(i) for i in source)
    return ids


class LLM:
    """Offline generation engine. See the module docstring; ``stats`` describes the last ``generate`` call."""

    def __init__(self, model_or_dir: Any, tokenizer: Any = None, speculative_mtp: bool = False,
                 num_speculative_tokens: int = 1, max_batch_size: int | None = None, max_model_len: int | None = None,
                 device: str | torch.device | None = None, dtype: torch.dtype | None = None,
                 compile: bool | dict = False,
                 seed: int | None = None, hf_backend: bool = False, workers: int | str | None = None):
        """Build an engine.

        model_or_dir: a DeepSeekV3ForCausalLM (held by reference), a directory of ours (config.json model_type
        deepseek_v3), or a local transformers causal LM (directory or instance). tokenizer: None (the model
        directory's, if it has one), a directory, or an object with encode/decode. speculative_mtp /
        num_speculative_tokens: MTP drafts per step (DeepSeek models with MTP modules). max_batch_size: cache slots
        per process (sequences decoded together; default 256 on a CPU, 64 on CUDA; fewer when the cache would not
        fit in 40 % of the free memory). max_model_len: context length (default: the config's, at most 8192; more than
        the config's max_position_embeddings is a ``ContextLengthError``, a ValueError); the latent cache is
        preallocated for max_batch_size × max_model_len. device: default the module's own device, else CUDA when
        available. dtype: for directories only (default bf16 on CUDA, fp32 on CPU); a module keeps
        its dtype. compile: torch.compile the decode step, the speculative verification and the MTP draft windows
        with CUDA graphs (CUDA only; a dict = torch.compile arguments on any device, see ``runner.GraphSteps``).
        seed: seeds the engine's generator used by requests without their own ``SamplingParams.seed``.
        hf_backend: serve a transformers model with its own forward and cache (the reference path) even when the
        engine's dense runner supports it. workers (CPU only): processes that share each large ``generate`` call,
        prompt by prompt, at cores ÷ workers threads each — an int, "auto" (the usable cores), or None = the
        ``R1LAB_WORKERS`` environment variable, 1 when unset (``workers.py``; the r1lab command sets "auto").
        """
        if device is None:  # a module stays where it is; a directory goes to the GPU when there is one
            device = next(model_or_dir.parameters()).device if isinstance(model_or_dir, nn.Module) else \
                ("cuda" if torch.cuda.is_available() else "cpu")
        self.device = torch.device(device)
        model, directory = _load_model(model_or_dir, self.device, dtype)
        if isinstance(model_or_dir, nn.Module) and next(model.parameters()).device != self.device:
            model.to(self.device)
        self.model = model
        self.tokenizer = _load_tokenizer(tokenizer, directory)
        self.eos_ids = _eos_ids(model, self.tokenizer)
        self.is_deepseek = isinstance(model, DeepSeekV3ForCausalLM)
        if max_batch_size is None:
            max_batch_size = DEFAULT_SLOTS["cuda" if self.device.type == "cuda" else "cpu"]
        if max_batch_size <= 0:
            raise ValueError(f"max_batch_size must be positive, got {max_batch_size}")
        self.max_batch_size = max_batch_size
        self.max_model_len = resolve_max_model_len(max_model_len, model.config, DEFAULT_MAX_MODEL_LEN)
        self.spec_k = 0
        if speculative_mtp:
            if not self.is_deepseek or len(model.model.mtp) == 0:
                raise ValueError("speculative_mtp=True needs a DeepSeek-V3 model with MTP modules "
                                 "(num_nextn_predict_layers >= 1)")
            if num_speculative_tokens < 1:
                raise ValueError(f"num_speculative_tokens must be >= 1, got {num_speculative_tokens}")
            self.spec_k = num_speculative_tokens
        self.compile = compile
        self.stats = GenerationStats()
        self._generator = torch.Generator(device=self.device)
        if seed is None:
            self._generator.seed()
        else:
            self._generator.manual_seed(seed)
        self.workers = resolve_workers(workers, torch.get_num_threads()) if self.device.type == "cpu" else 1
        self._threads = max(1, torch.get_num_threads() // self.workers)
        self._key = next(_KEYS)  # this LLM's replicas in the helper processes
        self._mirror: dict[str, torch.Tensor] | None = None
        if self.workers > 1:
            try:  # start the helpers now: they import while the caller goes on
                get_pool(self.workers, self._threads)
            except Exception as err:  # noqa: BLE001 - e.g. inside a daemonic process, which may not have children
                log.warning("engine: no helper processes (%s); generating in this process", err)
                self.workers = 1
        self._runner: DeepSeekRunner | DenseRunner | None = None
        reason = None if self.is_deepseek else ("hf_backend=True" if hf_backend else unsupported_reason(model))
        if reason is None:
            self._build_runner()
        else:
            from .hf_backend import HFBackend
            log.info("engine: transformers' own forward for %s (%s)", type(model).__name__, reason)
            self._hf = HFBackend(model, self.device, pad_id=self._pad_id())

    # ------------------------------------------------------------------ construction helpers
    def _pad_id(self) -> int:
        for v in (getattr(self.tokenizer, "pad_id", None), getattr(self.tokenizer, "pad_token_id", None),
                  getattr(self.model.config, "pad_token_id", None)):
            if isinstance(v, int):
                return v
        return min(self.eos_ids) if self.eos_ids else 0

    def _build_runner(self) -> None:
        cfg = self.model.config
        dtype = self.model.lm_head.weight.dtype
        alloc = self.max_model_len + 2 * self.spec_k + 4
        if not self.is_deepseek:
            width = DenseRunner.cache_width(cfg)
            self._fit_slots(cfg.num_hidden_layers * alloc * width * dtype.itemsize)
            cache = LatentCache(cfg.num_hidden_layers, self.max_batch_size, alloc, width, dtype, self.device)
            self._runner = DenseRunner(self.model, cache, compile=self.compile)
            return
        n_blocks, width = cfg.num_hidden_layers + self.spec_k, cfg.kv_lora_rank + cfg.qk_rope_head_dim
        self._fit_slots(alloc * (n_blocks * width + self.spec_k * (cfg.hidden_size + 1)) * dtype.itemsize)
        cache = LatentCache(n_blocks, self.max_batch_size, alloc, width, dtype, self.device,
                            hidden_size=cfg.hidden_size, n_hidden=self.spec_k)
        self._runner = DeepSeekRunner(self.model, cache, draft_depths=self.spec_k, compile=self.compile)

    def _fit_slots(self, bytes_per_slot: int) -> None:
        """Use fewer cache slots when max_batch_size × max_model_len would take more than 40% of the free memory (GPU)
        or of the available RAM shared by the worker processes (CPU) — a dense 7B model's K/V for 64 × 8192 tokens is
        ~30 GB: fewer sequences run at once, results are the same. Logs what it did."""
        if self.device.type == "cuda":
            free, _total = torch.cuda.mem_get_info(self.device)
        else:
            free = available_ram()
            if free is None:
                return
            free //= self.workers
        slots = fit_slots(self.max_batch_size, bytes_per_slot, int(0.4 * free))
        if slots < self.max_batch_size:
            log.warning("engine: %d cache slots × %d positions need %.1f GiB, 40%% of the free %.1f GiB allows %d "
                        "slots: running %d sequences at a time (pass a smaller max_model_len to keep more)",
                        self.max_batch_size, self.max_model_len, (self.max_batch_size + 1) * bytes_per_slot / 2**30,
                        free / 2**30, slots, slots)
            self.max_batch_size = slots

    def update_weights(self, model_or_state_dict: nn.Module | dict[str, torch.Tensor]) -> None:
        """Use new weights: an nn.Module is held by reference (no copy); a state dict is copied in place."""
        if isinstance(model_or_state_dict, nn.Module):
            if model_or_state_dict is self.model:
                return
            old = self.model
            self.model = model_or_state_dict.to(self.device)
            self._key, self._mirror = next(_KEYS), None  # helpers rebuild their replica from the new module
            if self._runner is not None:
                same = type(old.config) is type(self.model.config) and old.config == self.model.config
                if same and self.is_deepseek:
                    self._runner.model = self.model
                else:  # the dense runner's compiled graphs hold the old module's submodules: rebuild
                    self._build_runner()
            else:
                self._hf.model = self.model
        else:
            self.model.load_state_dict(model_or_state_dict, strict=True)

    # ------------------------------------------------------------------ text <-> ids
    def _encode(self, text: str) -> list[int]:
        if self.tokenizer is None:
            raise ValueError("text prompts need a tokenizer; pass tokenizer=... or prompt_token_ids")
        if hasattr(self.tokenizer, "bos_id"):  # our wrapper: BOS like training (encode_prompt_response)
            ids = self.tokenizer.encode(text)
            bos = self.tokenizer.bos_id
            return [bos, *ids] if bos is not None and ids[:1] != [bos] else ids
        return list(self.tokenizer.encode(text))

    def decode(self, ids: Seq[int]) -> str:
        """Text of token ids as completions show it (special tokens skipped)."""
        fn = self._decode_fn()
        if fn is None:
            raise ValueError("decode needs a tokenizer")
        return fn(list(ids))

    def _decode_fn(self):
        tok = self.tokenizer
        if tok is None:
            return None

        def decode(ids: list[int]) -> str:
            try:
                return tok.decode(ids, skip_special_tokens=True)
            except TypeError:
                return tok.decode(ids)
        return decode

    # ------------------------------------------------------------------ generate
    def generate(self, prompts: str | Seq[str] | None = None,
                 sampling_params: SamplingParams | Seq[SamplingParams] | None = None,
                 prompt_token_ids: Seq[Seq[int]] | None = None, use_tqdm: bool = False) -> list[RequestOutput]:
        """Generate completions for every prompt (text, or token ids); outputs are in prompt order."""
        texts, ids = self._prompts(prompts, prompt_token_ids)
        params = self._params(sampling_params, len(ids))
        decode = self._decode_fn()
        for i, p in enumerate(params):
            if p.stop and decode is None:
                raise ValueError(f"prompt {i}: stop strings need a tokenizer")
        if self._parallel_ok(params):
            return self._generate_parallel(texts, ids, params, use_tqdm)
        return self._generate_here(texts, ids, params, use_tqdm)

    def _generate_here(self, texts: list[str | None], ids: list[list[int]], params: list[SamplingParams],
                       use_tqdm: bool) -> list[RequestOutput]:
        """Generate in this process (validated prompts and one SamplingParams per prompt)."""
        decode = self._decode_fn()
        seqs_by_req = [self._sequences(i, pid, p) for i, (pid, p) in enumerate(zip(ids, params))]
        total = sum(len(s) for s in seqs_by_req)
        bar = None
        if use_tqdm:
            from tqdm.auto import tqdm
            bar = tqdm(total=total, desc="generate", unit="seq")
        self.stats = GenerationStats(prompt_tokens=sum(len(x) for x in ids))
        was_training = self.model.training
        self.model.eval()
        t0 = time.perf_counter()
        try:
            if self._runner is not None:
                self._run_engine_loop(seqs_by_req, decode, bar)
            else:
                self._hf.run([s for group in seqs_by_req for s in group], decode, self.max_batch_size,
                             self._generator, self.stats, bar)
        finally:
            self.model.train(was_training)
            if bar is not None:
                bar.close()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.stats.seconds = time.perf_counter() - t0
        self.stats.tokens_generated = sum(len(s.out_ids) for g in seqs_by_req for s in g)
        return [RequestOutput(prompt=texts[i], prompt_token_ids=list(ids[i]),
                              outputs=[s.result(decode) for s in group]) for i, group in enumerate(seqs_by_req)]

    def _prompts(self, prompts, prompt_token_ids) -> tuple[list[str | None], list[list[int]]]:
        if (prompts is None) == (prompt_token_ids is None):
            raise ValueError("pass exactly one of prompts or prompt_token_ids")
        if prompts is not None:
            texts = [prompts] if isinstance(prompts, str) else list(prompts)
            ids = [self._encode(t) for t in texts]
        else:
            ids = [list(map(int, p)) for p in prompt_token_ids]
            texts = [None] * len(ids)
        vocab = int(self.model.config.vocab_size)
        for i, p in enumerate(ids):
            if not p:
                raise ValueError(f"prompt {i} is empty")
            if len(p) >= self.max_model_len:
                raise ContextLengthError(f"prompt {i} has {len(p)} tokens; the context (max_model_len) is "
                                         f"{self.max_model_len}, leaving no room to generate", len(p),
                                         self.max_model_len)
            if min(p) < 0 or max(p) >= vocab:
                raise ValueError(f"prompt {i}: token id out of range [0, {vocab})")
        return texts, ids

    @staticmethod
    def _params(sp, n: int) -> list[SamplingParams]:
        if sp is None:
            sp = SamplingParams()
        if isinstance(sp, SamplingParams):
            return [sp] * n
        sp = list(sp)
        if len(sp) != n:
            raise ValueError(f"got {len(sp)} SamplingParams for {n} prompts")
        return sp

    # ------------------------------------------------------------------ data-parallel over CPU processes
    def _parallel_ok(self, params: list[SamplingParams]) -> bool:
        return self.workers > 1 and len(params) >= self.workers and sum(p.n for p in params) >= MIN_SEQUENCES

    def _replica_spec(self) -> dict[str, Any]:
        return {"arch": "deepseek" if self.is_deepseek else "hf", "config": self.model.config, "state": self._mirror,
                "tokenizer": self.tokenizer,
                "llm_kwargs": {"speculative_mtp": self.spec_k > 0, "num_speculative_tokens": max(self.spec_k, 1),
                               "max_batch_size": self.max_batch_size, "max_model_len": self.max_model_len,
                               "compile": self.compile if isinstance(self.compile, dict) else False,
                               "hf_backend": self._runner is None}}

    def _generate_parallel(self, texts: list[str | None], ids: list[list[int]], params: list[SamplingParams],
                           use_tqdm: bool) -> list[RequestOutput]:
        """Prompt i to worker i mod W (this process is worker 0); see ``workers.py``. If the helpers cannot take
        the call it runs here, and this LLM stops asking them (logged once)."""
        t0 = time.perf_counter()
        shards = deal(len(ids), self.workers)
        try:
            pool = get_pool(self.workers, self._threads)
            if self._mirror is None:
                self._mirror = shared_mirror(self.model)
            else:
                refresh_mirror(self.model, self._mirror)
            pool.ensure_loaded(self._key, self._replica_spec)
            seeds = torch.randint(0, 2**62, (pool.size,), generator=self._generator, device=self.device).tolist()
            pool.start(self._key, [([ids[i] for i in shard], [params[i] for i in shard], seed)
                                   for shard, seed in zip(shards[1:], seeds)])
        except Exception as err:  # noqa: BLE001 - anything the helpers cannot take runs here
            return self._parallel_failed(err, texts, ids, params, use_tqdm)
        threads = torch.get_num_threads()
        torch.set_num_threads(self._threads)
        try:
            here = self._generate_here([texts[i] for i in shards[0]], [ids[i] for i in shards[0]],
                                       [params[i] for i in shards[0]], use_tqdm)
        finally:
            torch.set_num_threads(threads)
            try:
                replies = pool.collect()
            except HelperError as err:
                replies = err
        if isinstance(replies, HelperError):
            return self._parallel_failed(replies, texts, ids, params, use_tqdm)
        outputs: list[RequestOutput | None] = [None] * len(ids)
        stats = self.stats
        for shard, outs in zip(shards, [here] + [r[0] for r in replies]):
            for i, out in zip(shard, outs):
                out.prompt = texts[i]
                outputs[i] = out
        for _outs, st in replies:
            for f in ("tokens_generated", "prompt_tokens", "steps", "drafts_proposed", "drafts_accepted",
                      "verify_rows"):
                setattr(stats, f, getattr(stats, f) + getattr(st, f))
        stats.seconds = time.perf_counter() - t0
        return outputs  # type: ignore[return-value]

    def _parallel_failed(self, err: Exception, texts, ids, params, use_tqdm) -> list[RequestOutput]:
        log.warning("engine: helper processes unavailable for this model (%s); generating in this process",
                    str(err).strip().splitlines()[-1] if str(err).strip() else type(err).__name__)
        self.workers = 1
        drop_pool()  # a half-sent call would leave replies in the pipes: the next user starts clean helpers
        return self._generate_here(texts, ids, params, use_tqdm)

    def _sequences(self, req: int, prompt: list[int], p: SamplingParams) -> list[Sequence]:
        stop_ids = frozenset(p.stop_token_ids if p.stop_token_ids is not None else self.eos_ids)
        out = []
        for j in range(p.n):
            gen = None
            if p.seed is not None:
                gen = torch.Generator(device=self.device)
                gen.manual_seed(stream_seed(p.seed, j, prompt))
            out.append(Sequence(req, j, prompt, p, stop_ids, self.max_model_len, generator=gen))
        return out

    # ------------------------------------------------------------------ the engine loop (DeepSeek and dense runners)
    def _run_engine_loop(self, seqs_by_req: list[list[Sequence]], decode, bar) -> None:
        for _ in self._iter_engine_loop(seqs_by_req, decode, bar):
            pass

    def _iter_engine_loop(self, seqs_by_req: list[list[Sequence]], decode, bar) -> Iterator[None]:
        """The continuous-batching loop; yields after every prefill or decode step (for streaming)."""
        sched = Scheduler(self.max_batch_size)
        for group in seqs_by_req:
            sched.add(group)
        batch_cache: dict[tuple[int, ...], tuple] = {}
        while sched.has_work():
            groups = sched.admit()
            if groups:
                self._prefill(groups, decode)
                yield
            self._retire(sched, bar)
            if not sched.running:
                continue
            running = list(sched.running)
            key = tuple(id(s) for s in running)
            if key not in batch_cache:
                batch_cache.clear()
                batch_cache[key] = self._batch_tensors(running)
            slots_B, rp, noise, all_slots = batch_cache[key]
            if self.spec_k:
                toks, lps, n_acc = speculative_round(self._runner, running, slots_B, rp, noise, self.spec_k)
                self.stats.drafts_proposed += self.spec_k * len(running)
                self.stats.drafts_accepted += sum(n_acc)
                self.stats.verify_rows += len(running)
                for s, tt, ll in zip(running, toks, lps):
                    for t, lp in zip(tt, ll):
                        if s.append(t, lp, decode):
                            break
            else:
                self._plain_step(running, slots_B, rp, noise, decode, all_slots)
            self.stats.steps += 1
            self._retire(sched, bar)
            yield

    def stream(self, prompt: str | Seq[int], sampling_params: SamplingParams | None = None) -> Iterator[int]:
        """Yield the token ids of one completion as they are produced (n is taken as 1). With the generic
        transformers backend the completion is generated first and then yielded."""
        sp = sampling_params or SamplingParams()
        if sp.n != 1:
            raise ValueError(f"stream() makes one completion; got SamplingParams.n = {sp.n}")
        _texts, ids = self._prompts([prompt] if isinstance(prompt, str) else None,
                                    None if isinstance(prompt, str) else [list(prompt)])
        decode = self._decode_fn()
        if self._runner is None:
            out = self.generate(prompt_token_ids=ids, sampling_params=sp)[0].outputs[0]
            yield from out.token_ids
            return
        seq = self._sequences(0, ids[0], sp)[0]
        was_training = self.model.training
        self.model.eval()
        shown = 0
        try:
            for _ in self._iter_engine_loop([[seq]], decode, None):
                while shown < len(seq.out_ids):
                    yield seq.out_ids[shown]
                    shown += 1
        finally:
            self.model.train(was_training)

    @staticmethod
    def _retire(sched: Scheduler, bar) -> None:
        done = sched.retire()
        if bar is not None and done:
            bar.update(len(done))

    def _batch_tensors(self, running: list[Sequence]):
        """Slots, sampling parameters, noise sources and the all-slots flag for a batch padded to a power-of-two row
        count (compiled steps) or a multiple of 8 (eager). Plain decoding puts the padding rows on free slots (they
        write one position there, which the next owner's prefill overwrites), so a batch as large as the cache holds
        every slot once and decodes in slot order (``DeepSeekRunner.decode``); speculative rounds keep them on the
        scratch slot."""
        # compiled steps: powers of two (one CUDA graph each); eager: multiples of 8 — padding rows cost a CPU as
        # much as real ones (336 sequences padded to 512 rows: 7.4 s vs 5.4 s at 256 slots; 5.05 s unpadded; sixteenth
        # session)
        b = batch_bucket(len(running), self.max_batch_size) if self._runner.compiled else \
            bucket(len(running), 8, max(self.max_batch_size, len(running)))
        pad = b - len(running)
        cache = self._runner.cache
        used = {s.slot for s in running}
        free = [] if self.spec_k else [i for i in range(cache.slots) if i not in used][:pad]
        pad_slots = free + [cache.scratch] * (pad - len(free))
        all_slots = b == cache.slots and len(free) == pad
        slots_B = torch.tensor([s.slot for s in running] + pad_slots, device=self.device)
        ps = [s.params for s in running]
        rp = RowParams([p.temperature for p in ps] + [1.0] * pad, [p.top_k for p in ps] + [0] * pad,
                       [p.top_p for p in ps] + [1.0] * pad, [p.min_p for p in ps] + [0.0] * pad, self.device)
        noise = RowNoise([s.generator for s in running] + [None] * pad, self._generator, self.device)
        return slots_B, rp, noise, all_slots

    def _plain_step(self, running: list[Sequence], slots_B, rp, noise, decode, all_slots: bool = False) -> None:
        pad = slots_B.shape[0] - len(running)
        tokens = [s.last_token() for s in running] + [0] * pad
        starts = [s.length - 1 for s in running] + [0] * pad
        kv_len = self._runner.kv_bucket(max(starts) + 1)
        tokens_B1 = torch.tensor(tokens, device=self.device)[:, None]
        logits_BV = self._runner.decode(tokens_B1, torch.tensor(starts, device=self.device), slots_B, kv_len,
                                        all_slots)[:, 0]
        tok_B, lp_B = sample(logits_BV, rp, noise)
        host = torch.stack([tok_B.float(), lp_B], dim=1)[: len(running)].tolist()  # the step's one host sync
        for s, (t, lp) in zip(running, host):
            s.append(int(t), lp, decode)

    def _prefill(self, groups, decode) -> None:
        """Prefill each admitted prompt once, share its cache rows with its other samples, sample first tokens."""
        budget = 8192
        chunk: list = []
        for g in groups + [None]:
            if g is not None and (not chunk or sum(len(c.prompt_ids) for c in chunk) + len(g.prompt_ids) <= budget):
                chunk.append(g)
                continue
            if chunk:
                self._prefill_chunk(chunk, decode)
            chunk = [g] if g is not None else []

    def _prefill_chunk(self, groups, decode) -> None:
        runner = self._runner
        logits_GV = runner.prefill([g.prompt_ids for g in groups], [g.seqs[0].slot for g in groups])
        if self.spec_k:
            catch_up_prompt(runner, [g.seqs[0] for g in groups], self.spec_k)
        rows, seqs = [], []
        for gi, g in enumerate(groups):
            runner.cache.copy_slot(g.seqs[0].slot, [s.slot for s in g.seqs[1:]], len(g.prompt_ids))
            for s in g.seqs[1:]:
                s.draft_len = list(g.seqs[0].draft_len)
            rows += [gi] * len(g.seqs)
            seqs += g.seqs
        logits_BV = logits_GV[torch.tensor(rows, device=self.device)]
        rp = RowParams([s.params.temperature for s in seqs], [s.params.top_k for s in seqs],
                       [s.params.top_p for s in seqs], [s.params.min_p for s in seqs], self.device)
        noise = RowNoise([s.generator for s in seqs], self._generator, self.device)
        tok_B, lp_B = sample(logits_BV, rp, noise)
        for s, (t, lp) in zip(seqs, torch.stack([tok_B.float(), lp_B], dim=1).tolist()):
            s.append(int(t), lp, decode)
