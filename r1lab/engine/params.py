"""The engine's request and result types, shaped after vLLM's (``SamplingParams``, ``RequestOutput``,
``CompletionOutput``) so that code written against vLLM reads the same here.

``CompletionOutput.logprobs`` is deliberately *not* vLLM's (which reports the processed distribution): it is the
log-probability of each sampled token under the model's raw distribution — the fp32 log-softmax of the logits at
temperature 1 with no top-k / top-p / min-p — i.e. exactly what the training forward computes, which GRPO uses as
π_old (DeepSeekMath §4.1, R1 §2.2.1).
"""

from __future__ import annotations

import hashlib
import math
from array import array
from dataclasses import dataclass, field


def stream_seed(seed: int, sample: int, prompt_ids: list[int]) -> int:
    """The generator seed of seeded sample ``sample`` (0-based index among a request's n): ``seed``, ``sample`` and the
    prompt's token ids hashed together.

    Why the prompt: the sampler draws one uniform number per token (inverse CDF, ``sampler.py``), so two prompts
    given the same seed would read the same numbers and pick the same quantile of their distributions at every step
    — an evaluation passing one seeded SamplingParams for all its problems would get samples correlated across
    problems (on one base model its pass@1 over 84 problems moved 0.19-0.27 over three seeds, 2026-11-26). The prompt
    in the hash gives every prompt its own stream; the same prompt and seed still give the same samples in any batch.

    Why the index inside the hash (not ``seed + sample``): with ``seed + sample``, seed 5's sample 1 was seed 6's
    sample 0, so requests with neighbouring seeds (GRPO's consecutive step seeds, a prompt drawn again) replayed each
    other's draws. Hashing the pair makes every (seed, sample) its own stream.

    >>> a = stream_seed(5, 0, [1, 2, 3])
    >>> a == stream_seed(5, 0, [1, 2, 3]), a == stream_seed(5, 0, [1, 2, 4]), a == stream_seed(4, 1, [1, 2, 3])
    (True, False, False)
    """
    head = f"{int(seed)}:{int(sample)}:".encode("ascii")  # decimal: any int, unambiguous before the binary ids
    digest = hashlib.blake2b(head + array("q", prompt_ids).tobytes(), digest_size=8,
                             person=b"r1lab-stream").digest()
    return int.from_bytes(digest, "little") >> 1  # manual_seed takes 64 bits; keep it non-negative


class ContextLengthError(ValueError):
    """A prompt, or an explicit ``max_model_len``, that does not fit the context. ``tokens`` is what was asked
    for (prompt tokens, or the requested max_model_len), ``limit`` what fits (the engine's max_model_len, or the
    model's context)."""

    def __init__(self, message: str, tokens: int, limit: int):
        super().__init__(message)
        self.tokens, self.limit = tokens, limit


def model_context(config) -> int | None:
    """The model's context length from its config: ``max_position_embeddings`` (ours, most transformers models),
    else ``n_positions`` / ``max_sequence_length`` / ``n_ctx``; None when the config names none."""
    for name in ("max_position_embeddings", "n_positions", "max_sequence_length", "n_ctx"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def resolve_max_model_len(requested: int | None, config, default_cap: int) -> int:
    """The engine's context: ``requested`` when given (an error if it exceeds the model's context: positions past
    it were never trained, and RoPE would silently extrapolate), else the model's context capped at ``default_cap``.

    >>> from types import SimpleNamespace as C
    >>> resolve_max_model_len(None, C(max_position_embeddings=128), 8192), resolve_max_model_len(64, C(), 8192)
    (128, 64)
    >>> resolve_max_model_len(200, C(max_position_embeddings=128), 8192)
    Traceback (most recent call last):
    ...
    r1lab.engine.params.ContextLengthError: max_model_len 200 exceeds the model's context (max_position_embeddings 128)
    """
    context = model_context(config)
    if requested is None or requested == 0:
        return min(context, default_cap) if context is not None else default_cap
    requested = int(requested)
    if requested < 0:
        raise ValueError(f"max_model_len must be positive, got {requested}")
    if context is not None and requested > context:
        raise ContextLengthError(f"max_model_len {requested} exceeds the model's context "
                                 f"(max_position_embeddings {context})", requested, context)
    return requested


@dataclass
class SamplingParams:
    """How to sample the completions of one request.

    temperature 0 means greedy; top_k 0 means no top-k; stop strings end a completion when they appear in its decoded
    text; stop_token_ids, when given, *replace* the default stop ids (tokenizer EOS + config eos_token_id).
    Seeded requests draw sample j (0-based) from a generator seeded with ``stream_seed(seed, j, prompt token ids)``:
    reproducible whatever batch the request runs in, different for different prompts that share one
    SamplingParams, and unrelated across neighbouring seeds (see ``stream_seed``).
    """

    n: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    min_p: float = 0.0
    max_tokens: int = 16
    stop: list[str] | str | None = None
    stop_token_ids: list[int] | None = None
    seed: int | None = None
    include_stop_str_in_output: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.stop, str):
            self.stop = [self.stop]
        self.stop = list(self.stop or [])
        if self.stop_token_ids is not None:
            self.stop_token_ids = [int(i) for i in self.stop_token_ids]
        self.validate()

    def validate(self) -> None:
        """Raise ValueError naming the first bad field."""
        if not isinstance(self.n, int) or self.n <= 0:
            raise ValueError(f"SamplingParams.n must be a positive integer, got {self.n!r}")
        if not isinstance(self.max_tokens, int) or self.max_tokens <= 0:
            raise ValueError(f"SamplingParams.max_tokens must be a positive integer, got {self.max_tokens!r}")
        for name in ("temperature", "top_p", "min_p"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"SamplingParams.{name} must be a finite number, got {value!r}")
        if self.temperature < 0:
            raise ValueError(f"SamplingParams.temperature must be >= 0 (0 = greedy), got {self.temperature!r}")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"SamplingParams.top_p must be in (0, 1], got {self.top_p!r}")
        if not isinstance(self.top_k, int) or self.top_k < 0:
            raise ValueError(f"SamplingParams.top_k must be an integer >= 0 (0 = off), got {self.top_k!r}")
        if not 0.0 <= self.min_p <= 1.0:
            raise ValueError(f"SamplingParams.min_p must be in [0, 1], got {self.min_p!r}")
        if any(not isinstance(s, str) or not s for s in self.stop):
            raise ValueError(f"SamplingParams.stop must hold non-empty strings, got {self.stop!r}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0

    @property
    def filters(self) -> bool:
        """Whether any truncation (top-k / top-p / min-p) is asked for."""
        return self.top_k > 0 or self.top_p < 1.0 or self.min_p > 0.0


@dataclass
class CompletionOutput:
    """One sampled completion. ``token_ids`` include the stop token when one ended it; ``text`` is cut before a stop
    string (kept with ``include_stop_str_in_output``) and omits a stop token's text; ``logprobs[i]`` is the raw fp32
    log-softmax (temperature 1, no truncation) of ``token_ids[i]`` given everything before it."""

    index: int
    token_ids: list[int]
    text: str
    logprobs: list[float]
    finish_reason: str  # "stop" | "length"


@dataclass
class RequestOutput:
    prompt: str | None
    prompt_token_ids: list[int]
    outputs: list[CompletionOutput] = field(default_factory=list)


@dataclass
class GenerationStats:
    """What the last ``LLM.generate`` call did. For speculative decoding: acceptance_rate = accepted drafts /
    proposed drafts; mean_accepted_length = tokens emitted per verification step per sequence (accepted drafts + 1)."""

    tokens_generated: int = 0
    seconds: float = 0.0
    prompt_tokens: int = 0
    steps: int = 0
    drafts_proposed: int = 0
    drafts_accepted: int = 0
    verify_rows: int = 0

    @property
    def tokens_per_second(self) -> float:
        return self.tokens_generated / self.seconds if self.seconds > 0 else 0.0

    @property
    def acceptance_rate(self) -> float | None:
        return self.drafts_accepted / self.drafts_proposed if self.drafts_proposed else None

    @property
    def mean_accepted_length(self) -> float | None:
        return (self.drafts_accepted + self.verify_rows) / self.verify_rows if self.verify_rows else None

    def as_dict(self) -> dict[str, float | int | None]:
        return {"tokens_generated": self.tokens_generated, "seconds": round(self.seconds, 4),
                "tokens_per_second": round(self.tokens_per_second, 2), "prompt_tokens": self.prompt_tokens,
                "steps": self.steps, "acceptance_rate": self.acceptance_rate,
                "mean_accepted_length": self.mean_accepted_length}
