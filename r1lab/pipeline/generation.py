"""One sampling interface for every pipeline stage: prompt styles and an adapter from "something that generates"
(our engine's LLM, a model directory, or a plain function) to ``GenerateFn``.

Idea: evaluation (arXiv 2501.12948 §3, "pass@1 with k samples at temperature 0.6, top-p 0.95"), rejection sampling
(§2.3.3) and distillation all just need "k completions per prompt"; keeping that behind one small protocol lets the
pipeline logic be unit-tested with a fake generator and run for real with the engine.

Prompt styles (``build_prompt``):
- ``"r1-zero"``: the R1-Zero template of paper Table 1 around the question (base and R1-Zero models).
- ``"r1"``: the R1 chat format; the prompt already ends with ``<think>\\n`` (README: force the response to start
  with it), so ``full_response`` puts it back in front of the completion before any reward reads it.
- ``"plain"``: the bare question (HF students without our tokenizer's chat template).
Deliberate difference: DeepSeek appends "Please reason step by step, and put your final answer within \\boxed{}."
to math prompts; our tiny models were trained on the task prompts alone, so we do not.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PROMPT_STYLES = ("r1-zero", "r1", "plain")

# Problems per generate call in evaluation and rejection sampling. The engine batches continuously inside a call, and
# every call ends with a tail of a few long completions decoded almost alone, so fewer, larger calls finish sooner:
# 256 problems × 4 samples fill two CPU workers' 256 slots each (docs/benchmarks.md, sixteenth session; was 64).
PROBLEMS_PER_CALL = 256


@dataclass(frozen=True)
class Sampling:
    """How to sample: n completions per prompt, temperature (0 = greedy), nucleus top_p, max new tokens, seed."""

    n: int = 1
    temperature: float = 0.6
    top_p: float = 0.95
    max_tokens: int = 256
    seed: int = 0


@dataclass(frozen=True)
class Completion:
    """One sampled completion: its text, how many tokens it has and why it stopped ("stop" | "length")."""

    text: str
    num_tokens: int
    finish_reason: str = "stop"


GenerateFn = Callable[[list[str], Sampling], list[list[Completion]]]
"""prompts, sampling → for each prompt, ``sampling.n`` completions."""


def build_prompt(question: str, style: str, tokenizer: Any = None) -> str:
    """The prompt text for one question in a prompt style (see the module docstring).

    >>> build_prompt("What is 2+3?", "plain")
    'What is 2+3?'
    >>> build_prompt("What is 2+3?", "r1-zero").endswith("User: What is 2+3?. Assistant:")
    True
    >>> build_prompt("x", "chat")
    Traceback (most recent call last):
    ...
    ValueError: unknown prompt style 'chat'; known: r1-zero, r1, plain
    """
    if style == "plain":
        return question
    if style == "r1-zero":
        from r1lab.data.templates import r1_zero_prompt

        return r1_zero_prompt(question)
    if style == "r1":
        if tokenizer is None:
            raise ValueError("prompt style 'r1' needs a tokenizer (its chat template)")
        from r1lab.data.templates import r1_chat_prompt

        return r1_chat_prompt(question, tokenizer)
    raise ValueError(f"unknown prompt style {style!r}; known: {', '.join(PROMPT_STYLES)}")


def full_response(completion: str, style: str) -> str:
    """The response as rewards should read it: for style "r1" the forced ``<think>\\n`` goes back in front.

    >>> full_response("2+3=5\\n</think>\\n\\nThe answer is 5.", "r1")
    '<think>\\n2+3=5\\n</think>\\n\\nThe answer is 5.'
    >>> full_response("<think> a </think>", "r1-zero")
    '<think> a </think>'
    """
    if style == "r1" and not completion.lstrip().startswith("<think>"):
        return "<think>\n" + completion
    return completion


def _count_tokens(text: str, tokenizer: Any) -> int:
    return len(tokenizer.encode(text)) if tokenizer is not None else len(text.split())


def _normalise(item: Any, tokenizer: Any) -> Completion:
    """A Completion from a str, a Completion, or any object with ``text`` (and maybe token ids / finish reason)."""
    if isinstance(item, Completion):
        return item
    if isinstance(item, str):
        return Completion(item, _count_tokens(item, tokenizer))
    text = getattr(item, "text", None)
    if text is None and isinstance(item, dict):
        text = item.get("text")
    if not isinstance(text, str):
        raise TypeError(f"a generator returned {type(item).__name__}; expected str or an object with .text")
    ids = getattr(item, "token_ids", None) or (item.get("token_ids") if isinstance(item, dict) else None)
    n_tok = len(ids) if ids is not None else _count_tokens(text, tokenizer)
    reason = getattr(item, "finish_reason", None) or (item.get("finish_reason") if isinstance(item, dict) else None)
    return Completion(text, n_tok, str(reason or "stop"))


def wrap_function(fn: Callable[..., Sequence[Sequence[Any]]], tokenizer: Any = None) -> GenerateFn:
    """Wrap ``fn(prompts, sampling) -> [[str | Completion | obj with .text]]`` into a checked GenerateFn."""

    def generate(prompts: list[str], sampling: Sampling) -> list[list[Completion]]:
        out = fn(list(prompts), sampling)
        if len(out) != len(prompts):
            raise ValueError(f"generator returned {len(out)} rows for {len(prompts)} prompts")
        rows = [[_normalise(c, tokenizer) for c in row] for row in out]
        for i, row in enumerate(rows):
            if len(row) != sampling.n:
                raise ValueError(f"generator returned {len(row)} completions for prompt {i}, asked for {sampling.n}")
        return rows

    return generate


def encode_prompt(tokenizer: Any, prompt: str) -> list[int]:
    """Prompt ids with exactly one BOS in front (chat-templated prompts already start with it)."""
    ids = tokenizer.encode(prompt)
    bos = tokenizer.bos_id
    return ids if bos is None or ids[:1] == [bos] else [bos, *ids]


def sampler_generate_fn(sampler: Any, tokenizer: Any) -> GenerateFn:
    """A GenerateFn over an ``r1lab.rl.sampler.Sampler`` (engine-backed or the naive cache-free loop)."""

    def call(prompts: list[str], sampling: Sampling) -> list[list[Completion]]:
        ids = [encode_prompt(tokenizer, p) for p in prompts]
        rows = sampler.sample(ids, sampling.n, sampling.max_tokens, sampling.temperature, sampling.top_p,
                              sampling.seed)
        out = []
        for row in rows:
            comps = []
            for smp in row:
                toks = [t for t in smp.token_ids if t != tokenizer.eos_id]
                comps.append(Completion(tokenizer.decode(toks, skip_special_tokens=True), len(smp.token_ids),
                                        smp.finish_reason))
            out.append(comps)
        return out

    return wrap_function(call, tokenizer)


def resolve_device(device: str) -> str:
    """"auto" → "cuda" when available, else "cpu"; anything else unchanged."""
    import torch

    return ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device


def load_model(model_dir: str | Path, device: str = "auto") -> Any:
    """Our DeepSeek-V3 model when config.json says deepseek_v3, else any transformers causal LM (Qwen2, Llama);
    bf16 on CUDA, fp32 on CPU."""
    import json

    import torch

    device = resolve_device(device)
    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    cfg = json.loads((Path(model_dir) / "config.json").read_text(encoding="utf-8"))
    if cfg.get("model_type") == "deepseek_v3":
        from r1lab.model import DeepSeekV3ForCausalLM

        model = DeepSeekV3ForCausalLM.from_pretrained(model_dir, dtype=dtype, device=device)
    else:
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype, local_files_only=True).to(device)
    return model.eval()


def engine_generate_fn(llm: Any, tokenizer: Any) -> GenerateFn:
    """A GenerateFn over ``r1lab.engine.LLM`` (prompts encoded here, one BOS; n completions per prompt)."""
    from r1lab.engine.params import SamplingParams

    def call(prompts: list[str], sampling: Sampling) -> list[list[Completion]]:
        params = SamplingParams(n=sampling.n, temperature=sampling.temperature, top_p=sampling.top_p,
                                max_tokens=sampling.max_tokens, seed=sampling.seed)
        outs = llm.generate(prompt_token_ids=[encode_prompt(tokenizer, p) for p in prompts], sampling_params=params)
        return [[Completion(o.text, len(o.token_ids), o.finish_reason) for o in req.outputs] for req in outs]

    return wrap_function(call, tokenizer)


def load_generator(model_dir: str | Path, tokenizer_dir: str | Path | None = None, device: str = "auto",
                   sampler: str = "auto") -> GenerateFn:
    """A GenerateFn for a saved model directory (its tokenizer lives next to the weights unless given): our engine
    (``sampler`` "auto" | "engine"), or the naive cache-free loop of ``r1lab.rl.sampler`` ("naive", or "auto"
    when the engine cannot take the model)."""
    from r1lab.data.tokenizer import load_tokenizer

    tokenizer = load_tokenizer(tokenizer_dir or model_dir)
    device = resolve_device(device)
    model = load_model(model_dir, device)
    generate: Any = None
    if sampler in ("auto", "engine"):
        try:
            from r1lab.engine import LLM

            # compile: CUDA graphs for the decode step on a GPU (40× eager transformers at batch 1 on an H100,
            # docs/benchmarks.md); ignored on CPU
            generate = engine_generate_fn(LLM(model, tokenizer=tokenizer, device=device, compile=True), tokenizer)
        except Exception as err:  # noqa: BLE001 - "auto" falls back to the naive sampler
            if sampler == "engine":
                raise
            import logging

            logging.getLogger(__name__).warning("engine unavailable for %s (%s); using the naive sampler",
                                                model_dir, err)
    if generate is None:
        from r1lab.rl.sampler import NaiveSampler

        generate = sampler_generate_fn(NaiveSampler(model, tokenizer.eos_id, tokenizer.pad_id), tokenizer)
    generate.tokenizer = tokenizer  # type: ignore[attr-defined]  # prompt styles need the chat template
    return generate


def as_generate_fn(obj: Any, tokenizer: Any = None) -> GenerateFn:
    """Accept a model directory, an ``r1lab.rl.sampler`` Sampler (with ``tokenizer``), or a function
    ``(prompts, sampling) -> [[str | Completion | obj with .text]]``."""
    if isinstance(obj, str | Path):
        return load_generator(obj)
    if hasattr(obj, "sample") and tokenizer is not None:
        return sampler_generate_fn(obj, tokenizer)
    if callable(obj):
        return wrap_function(obj, tokenizer)
    raise TypeError(f"cannot generate with {type(obj).__name__}: pass an LLM, a model directory or a function")
