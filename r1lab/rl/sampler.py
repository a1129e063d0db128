"""Samplers: how GRPO gets G completions per prompt together with π_old log-probs.

``EngineSampler`` wraps the inference engine (``r1lab.engine.LLM``: paged latent cache, batched decoding) — the fast
path; ``update_weights`` pushes the policy's new weights into it after every optimizer step (the trainer and the
generator share the process, so this is a copy of tensors, no network sync). ``NaiveSampler`` is a dependency-free
fallback for any causal LM (our model or a transformers one): it recomputes the full forward at every new token
(no KV cache, O(T²)), fine for tests and tiny models, and always in sync with the trained weights because it *uses*
the trained module. Both return raw-softmax (temperature 1) log-probs of the sampled tokens.

Legend: N rows, S positions, V vocabulary.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch
from torch import nn


@dataclass
class Sample:
    """One completion: token ids (EOS included if produced), π_old log-prob per token, "stop" | "length"."""

    token_ids: list[int]
    logprobs: list[float]
    finish_reason: str


class Sampler(Protocol):
    def sample(self, prompts: list[list[int]], n: int, max_new_tokens: int, temperature: float, top_p: float,
               seed: int) -> list[list[Sample]]:
        """``n`` completions for each prompt (a list of n Samples per prompt, in prompt order)."""
        ...

    def update_weights(self, model: nn.Module) -> None:
        """Make later samples come from ``model``'s current weights."""
        ...


def _top_p_filter(logits_NV: torch.Tensor, top_p: float) -> torch.Tensor:
    """Logits with everything outside the smallest set of probability mass ≥ top_p set to −inf.

    >>> _top_p_filter(torch.tensor([[2.0, 1.0, -5.0]]), 0.5).isinf().tolist()
    [[False, True, True]]
    """
    if top_p >= 1.0:
        return logits_NV
    sorted_NV, idx_NV = logits_NV.sort(dim=-1, descending=True)
    cum_NV = sorted_NV.softmax(dim=-1).cumsum(dim=-1)
    drop_NV = cum_NV - sorted_NV.softmax(dim=-1) >= top_p  # mass before this token already reaches top_p
    sorted_NV = sorted_NV.masked_fill(drop_NV, float("-inf"))
    return torch.full_like(logits_NV, float("-inf")).scatter(-1, idx_NV, sorted_NV)


def check_prompt_lengths(prompts: list[list[int]], model: nn.Module) -> int | None:
    """The model's context (``engine.params.model_context``; None when the config names none, and nothing is
    checked); raise ValueError for a prompt that leaves no room to generate within it."""
    from r1lab.engine.params import model_context

    context = model_context(getattr(model, "config", None))
    if not isinstance(context, int):
        return None
    for i, p in enumerate(prompts):
        if len(p) >= context:
            raise ValueError(f"prompt {i} has {len(p)} tokens; the model's context (max_position_embeddings) is "
                             f"{context}, leaving no room to generate")
    return context


class NaiveSampler:
    """Batched ancestral sampling with a full forward per token (no cache); see the module docstring. A prompt that
    does not fit the model's context is a ValueError; a completion that reaches the context ends there ("length"),
    as the engine's do at its max_model_len."""

    def __init__(self, model: nn.Module, eos_id: int, pad_id: int, chunk_size: int = 64):
        self.model, self.eos_id, self.pad_id, self.chunk_size = model, eos_id, pad_id, chunk_size

    def update_weights(self, model: nn.Module) -> None:
        self.model = model

    @torch.no_grad()
    def sample(self, prompts: list[list[int]], n: int, max_new_tokens: int, temperature: float, top_p: float,
               seed: int) -> list[list[Sample]]:
        context = check_prompt_lengths(prompts, self.model)
        rows = [p for p in prompts for _ in range(n)]
        gen = torch.Generator().manual_seed(seed)
        out: list[Sample] = []
        for lo in range(0, len(rows), self.chunk_size):
            chunk = rows[lo : lo + self.chunk_size]
            room = [max_new_tokens if context is None else min(max_new_tokens, context - len(r)) for r in chunk]
            out += self._sample_rows(chunk, room, temperature, top_p, gen)
        return [out[i * n : (i + 1) * n] for i in range(len(prompts))]

    def _sample_rows(self, rows: list[list[int]], room: list[int], temperature: float, top_p: float,
                     gen: torch.Generator) -> list[Sample]:
        """Sample each row until EOS or its ``room`` (new tokens it may have) runs out."""
        was_training = self.model.training
        self.model.eval()
        device = next(self.model.parameters()).device
        width = max(len(r) for r in rows)
        ids_NS = torch.tensor([[self.pad_id] * (width - len(r)) + r for r in rows], device=device)
        mask_NS = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows], device=device)
        n = len(rows)
        done_N = torch.zeros(n, dtype=torch.bool, device=device)
        room_N = torch.tensor(room, device=device)
        tokens, logps = [], []
        for step in range(max(room)):
            positions_NS = (mask_NS.cumsum(dim=1) - 1).clamp(min=0)
            logits_NV = self.model(input_ids=ids_NS, attention_mask=mask_NS, position_ids=positions_NS,
                                   logits_to_keep=1).logits[:, -1].float()
            logp_NV = torch.log_softmax(logits_NV, dim=-1)
            if temperature <= 0:
                tok_N = logits_NV.argmax(dim=-1)
            else:
                probs_NV = _top_p_filter(logits_NV / temperature, top_p).softmax(dim=-1)
                tok_N = torch.multinomial(probs_NV.cpu(), 1, generator=gen).squeeze(1).to(device)
            tok_N = torch.where(done_N, torch.full_like(tok_N, self.pad_id), tok_N)
            tokens.append(tok_N)
            logps.append(logp_NV.gather(1, tok_N[:, None]).squeeze(1))
            ids_NS = torch.cat([ids_NS, tok_N[:, None]], dim=1)
            mask_NS = torch.cat([mask_NS, (~done_N).long()[:, None]], dim=1)
            done_N |= (tok_N == self.eos_id) | (room_N <= step + 1)
            if bool(done_N.all()):
                break
        self.model.train(was_training)
        tok_NT, logp_NT = torch.stack(tokens, 1).tolist(), torch.stack(logps, 1).tolist()
        samples = []
        for toks, lps, limit in zip(tok_NT, logp_NT, room):
            toks, lps = toks[:limit], lps[:limit]
            end = toks.index(self.eos_id) + 1 if self.eos_id in toks else len(toks)
            samples.append(Sample(toks[:end], lps[:end], "stop" if self.eos_id in toks[:end] else "length"))
        return samples


class EngineSampler:
    """Adapter over ``r1lab.engine.LLM`` (constructed by the caller)."""

    def __init__(self, llm, engine_module):
        self.llm, self.engine = llm, engine_module

    def update_weights(self, model: nn.Module) -> None:
        self.llm.update_weights(model)

    def sample(self, prompts: list[list[int]], n: int, max_new_tokens: int, temperature: float, top_p: float,
               seed: int) -> list[list[Sample]]:
        params = self.engine.SamplingParams(n=n, max_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
                                            seed=seed)
        outputs = self.llm.generate(prompt_token_ids=prompts, sampling_params=params)
        return [[_engine_sample(o) for o in _completions(req, n)] for req in outputs]


def _completions(request_output, n: int) -> list:
    """The n completions of one prompt, whether the engine nests them (``.outputs``) or not."""
    outs = getattr(request_output, "outputs", request_output)
    outs = outs if isinstance(outs, (list, tuple)) else [outs]
    if len(outs) != n:
        raise RuntimeError(f"engine returned {len(outs)} completions for a prompt, expected n={n}")
    return list(outs)


def _engine_sample(o) -> Sample:
    ids = list(o.token_ids)
    lps = [float(x) for x in (o.logprobs if o.logprobs is not None else [0.0] * len(ids))]
    if len(lps) != len(ids):
        raise RuntimeError(f"engine returned {len(lps)} log-probs for {len(ids)} tokens")
    return Sample(ids, lps, "length" if o.finish_reason == "length" else "stop")


def _is_context_error(err: Exception) -> bool:
    """Whether ``err`` is the engine's ``ContextLengthError`` (False when the engine cannot be imported)."""
    try:
        from r1lab.engine import ContextLengthError
    except ImportError:
        return False
    return isinstance(err, ContextLengthError)


def make_sampler(model: nn.Module, tokenizer, kind: str = "auto", **engine_kwargs) -> Sampler:
    """"engine" (r1lab.engine, error if missing), "naive", or "auto" (the engine if importable and it supports
    the model, else naive). A ``max_model_len`` in ``engine_kwargs`` beyond the model's context is an error in every
    kind that tries the engine (``r1lab.engine.ContextLengthError``), never a fallback."""
    if kind not in ("auto", "engine", "naive"):
        raise ValueError(f"sampler must be 'auto', 'engine' or 'naive', got {kind!r}")
    if kind != "naive":
        try:
            from r1lab import engine

            return EngineSampler(engine.LLM(model, tokenizer=tokenizer, **engine_kwargs), engine)
        except Exception as err:  # noqa: BLE001 - any engine problem falls back in "auto"
            # ... except a context error: the naive sampler would run the same prompts past the model's context
            if kind == "engine" or _is_context_error(err):
                raise
            import logging

            logging.getLogger(__name__).warning("engine unavailable (%s); using the naive sampler", err)
    return NaiveSampler(model, tokenizer.eos_id, tokenizer.pad_id)
