"""Continuous batching (Orca, Yu et al. OSDI 2022; vLLM's scheduler without paging): a fixed number of cache slots,
sequences that finish on their own, and waiting prompts admitted into freed slots between decode steps.

A request with n samples is prefilled once; its cache rows are copied into the other n − 1 slots (when fewer slots
are free, the remaining samples wait and are prefilled again later — same result, a little more compute). Stop
conditions are checked on the host after each step: stop token ids, stop strings on the decoded tail of the text,
``max_tokens`` and the context length. This is the only place that decides ``finish_reason``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from .params import CompletionOutput, SamplingParams


@dataclass
class Sequence:
    """One sample being generated."""

    req_idx: int
    sample_idx: int
    prompt_ids: list[int]
    params: SamplingParams
    stop_ids: frozenset[int]
    max_len: int  # context length: prompt + completion may not exceed it
    generator: torch.Generator | None = None
    slot: int = -1
    out_ids: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    finish_reason: str | None = None
    stop_string_at: tuple[int, str] | None = None  # (char index, matched stop string)
    draft_len: list[int] = field(default_factory=list)  # speculative: valid positions per MTP depth

    @property
    def length(self) -> int:
        return len(self.prompt_ids) + len(self.out_ids)

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None

    def last_token(self) -> int:
        return self.out_ids[-1] if self.out_ids else self.prompt_ids[-1]

    def append(self, token: int, logprob: float, decode: Callable[[list[int]], str] | None) -> bool:
        """Add one token; returns True when the sequence has just finished."""
        self.out_ids.append(token)
        self.logprobs.append(logprob)
        if token in self.stop_ids or self.params.stop and decode is not None and self._stop_string(decode):
            self.finish_reason = "stop"
        elif len(self.out_ids) >= self.params.max_tokens or self.length >= self.max_len:
            self.finish_reason = "length"
        return self.finished

    def _stop_string(self, decode: Callable[[list[int]], str]) -> bool:
        longest = max(len(s) for s in self.params.stop)
        tail = decode(self.out_ids[-(longest + 8):])
        if not any(s in tail for s in self.params.stop):
            return False
        text = decode(self.out_ids)
        hits = [(text.find(s), s) for s in self.params.stop if s in text]
        self.stop_string_at = min(hits)
        return True

    def result(self, decode: Callable[[list[int]], str] | None) -> CompletionOutput:
        ids = self.out_ids
        text = ""
        if decode is not None:
            shown = ids[:-1] if ids and ids[-1] in self.stop_ids and not self.params.include_stop_str_in_output \
                else ids
            text = decode(shown)
            if self.stop_string_at is not None:
                at, s = self.stop_string_at
                text = text[: at + len(s)] if self.params.include_stop_str_in_output else text[:at]
        return CompletionOutput(index=self.sample_idx, token_ids=list(ids), text=text, logprobs=list(self.logprobs),
                                finish_reason=self.finish_reason or "length")


@dataclass
class PrefillGroup:
    """Samples of one request admitted together: ``seqs[0].slot`` receives the prefill, the others a copy."""

    prompt_ids: list[int]
    seqs: list[Sequence]


class Scheduler:
    """Slots, the waiting queue and the running set."""

    def __init__(self, n_slots: int, max_prefill_tokens: int = 16384):
        self.n_slots = n_slots
        self.max_prefill_tokens = max_prefill_tokens
        self.free: list[int] = list(range(n_slots - 1, -1, -1))
        self.waiting: deque[list[Sequence]] = deque()
        self.running: list[Sequence] = []
        self.done: list[Sequence] = []

    def add(self, samples: list[Sequence]) -> None:
        """Queue the samples of one request (they share a prompt)."""
        self.waiting.append(list(samples))

    def has_work(self) -> bool:
        return bool(self.waiting or self.running)

    def admit(self) -> list[PrefillGroup]:
        """Move waiting samples into free slots (FIFO), at most ``max_prefill_tokens`` prompt tokens per call."""
        groups: list[PrefillGroup] = []
        budget = self.max_prefill_tokens
        while self.waiting and self.free:
            pending = self.waiting[0]
            cost = len(pending[0].prompt_ids)
            if groups and cost > budget:
                break
            take = pending[: len(self.free)]
            for seq in take:
                seq.slot = self.free.pop()
            self.running.extend(take)
            groups.append(PrefillGroup(pending[0].prompt_ids, take))
            budget -= cost
            if len(take) == len(pending):
                self.waiting.popleft()
            else:
                self.waiting[0] = pending[len(take):]
        return groups

    def retire(self) -> list[Sequence]:
        """Free the slots of finished sequences; returns them."""
        finished = [s for s in self.running if s.finished]
        if finished:
            self.running = [s for s in self.running if not s.finished]
            for s in finished:
                self.free.append(s.slot)
            self.done.extend(finished)
        return finished
