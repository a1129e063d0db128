"""Stage runners: one function per stage kind, ``run_<kind>(ctx: StageContext) -> artifacts``, plus the config
dataclasses of the kinds the pipeline owns (tokenizer, eval, cold start, rejection sampling, HF student, report).

Trainers (pretrain, SFT, GRPO) live in r1lab.train / r1lab.rl; their runners here only wire paths (model, data,
tokenizer, out_dir, resume=True) into the trainer's own config dataclass and call it. Every stage writes only into
``ctx.out_dir``. Artifact keys: ``model_dir`` (a saved model with its tokenizer), ``data`` (an SFT JSONL),
``tokenizer_dir`` / ``corpus``, ``eval`` (eval.json).

Cold-start data (arXiv 2501.12948 §2.3.1): R1-Zero outputs filtered for correctness, format and readability (one
language, bounded length, not repetitive) rewritten into the R1 format ``<think>\\n{reasoning}\\n</think>\\n\\n{summary}``
with a summary that states the answer, plus worked task solutions rewritten the same way.
"""

from __future__ import annotations

import dataclasses
import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from r1lab.data.corpus import CODE_SWITCH_SHARE
from r1lab.pipeline.rundir import StageContext


def _cfg(cls: type, ctx: StageContext) -> Any:
    return cls(**ctx.config)


# ------------------------------------------------------------------------------------------------ tokenizer
@dataclass
class TokenizerStage:
    """Built-in corpus (+ optional full-template documents) and a byte-level BPE tokenizer."""

    n_per_family: int = 1500
    """Train problems per task family and difficulty level in the corpus."""
    levels: list[int] = field(default_factory=lambda: [1, 2])
    """Difficulty levels in the corpus."""
    vocab_size: int = 2048
    """Target vocabulary size."""
    template_share: float = 0.0
    """Extra documents, as a share of the train problems, written with the FULL R1-Zero template (paper Table 1)
    followed by ``<think> solution </think> <answer> answer </answer>``. The built-in corpus shows the tag format
    only after a short "User: … Assistant:" prefix; a tiny base model then answers the long template with noise,
    every GRPO group scores 0 and R1-Zero cannot start. Deliberate difference from DeepSeek-V3-Base, which never
    saw this template: without it our R1-Zero stage has no reward signal at all."""
    template_worked_share: float = 0.3
    """Share of those documents whose think block holds the worked solution; the others hold only the answer
    sentence ("<think> The answer is 85. </think>"), like the corpus's own "r1zero"/"r1zero_answer" mix (see
    ``r1lab.data.corpus``): the base model mostly answers at once and sometimes reasons, and R1-Zero's RL can
    learn which pays."""
    code_switch_share: float = CODE_SWITCH_SHARE
    """Share of the code-switchable problems (a Chinese arithmetic question) with a worked solution that also get
    a document reasoned in English, in the corpus and among the template documents (``r1lab.data.corpus``,
    "Code-switching"): the base then mixes languages now and then, as DeepSeek-V3-Base does, which gives R1's
    one-language filters and language-consistency reward something to remove. 0 = no such documents."""
    seed: int = 0
    """Corpus seed."""


def template_documents(n_per_family: int, levels: list[int], share: float, seed: int,
                       worked_share: float = 1.0, code_switch_share: float = 0.0) -> list[str]:
    """Full-R1-Zero-template documents for a seeded ``share`` of the train problems (train split only); a seeded
    ``worked_share`` of them show the worked solution in the think block, the rest only the answer sentence;
    worked ones get a code-switched twin like the corpus's (``code_switch_share``)."""
    from r1lab.data.corpus import code_switch, template_body, train_problems
    from r1lab.data.templates import r1_zero_prompt

    if not 0.0 <= worked_share <= 1.0:
        raise ValueError(f"template_worked_share must be in [0, 1], got {worked_share}")
    rng = random.Random(f"template-docs:{seed}")
    switch_rng = random.Random(f"template-docs.code-switch:{seed}")
    problems = [p for p in train_problems(n_per_family, levels, seed, None) if rng.random() < share]
    out = []
    for p in problems:
        worked = rng.random() < worked_share
        out.append(f"{r1_zero_prompt(p.prompt)} {template_body(p, worked)}")
        if worked and (q := code_switch(p, switch_rng, code_switch_share)) is not p:
            out.append(f"{r1_zero_prompt(q.prompt)} {template_body(q, True)}")  # the same problem, other language
    return out


def run_tokenizer(ctx: StageContext) -> dict[str, Any]:
    from r1lab.data.corpus import build_corpus, write_jsonl_atomic
    from r1lab.train.data import ensure_tokenizer

    c = _cfg(TokenizerStage, ctx)
    ctx.out_dir.mkdir(parents=True, exist_ok=True)
    corpus = ctx.out_dir / "corpus.jsonl"
    stats = build_corpus(corpus, n_per_family=c.n_per_family, difficulty_levels=list(c.levels), seed=c.seed,
                         code_switch_share=c.code_switch_share)
    extra = template_documents(c.n_per_family, list(c.levels), c.template_share, c.seed,
                               c.template_worked_share, c.code_switch_share) if c.template_share else []
    if extra:
        rows = [json.loads(line) for line in corpus.read_text(encoding="utf-8").splitlines() if line.strip()]
        rows += [{"text": t} for t in extra]
        random.Random(c.seed).shuffle(rows)
        write_jsonl_atomic(rows, corpus)
    print(f"corpus: {stats['documents']:,} documents ({stats['code_switched']:,} code-switched) + {len(extra):,} "
          f"full-template documents → {corpus}", flush=True)
    tok = ensure_tokenizer(None, [str(corpus)], ctx.out_dir, c.vocab_size)
    return {"corpus": str(corpus), "tokenizer_dir": tok, "documents": stats["documents"] + len(extra),
            "template_documents": len(extra)}


# ------------------------------------------------------------------------------------------------ trainers
def _fill(cls: type, ctx: StageContext, wiring: dict[str, Any]) -> Any:
    """The trainer's config: the recipe's fields, then the wired ones that the config class has."""
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**ctx.config, **{k: v for k, v in wiring.items() if k in names})


def run_pretrain(ctx: StageContext) -> dict[str, Any]:
    from r1lab.train.pretrain import PretrainConfig, run_pretrain as train

    tok = ctx.inputs["tokenizer"]
    wiring = {"out_dir": str(ctx.out_dir), "tokenizer": tok["tokenizer_dir"], "corpus": [tok["corpus"]],
              "resume": True, "progress": True}
    if "model" in ctx.inputs:
        wiring["model_dir"] = ctx.inputs["model"]["model_dir"]
    art = train(_fill(PretrainConfig, ctx, wiring))
    return {"model_dir": art["model_dir"], "metrics": art.get("metrics"), "final_loss": art.get("final_loss"),
            "heldout_loss": art.get("heldout_loss"), "steps": art.get("steps")}


def run_sft(ctx: StageContext) -> dict[str, Any]:
    from r1lab.train import sft

    wiring = {"out_dir": str(ctx.out_dir), "model": ctx.inputs["model"]["model_dir"],
              "data": ctx.inputs["data"]["data"], "resume": True}
    art = sft.run_sft(_fill(sft.SFTConfig, ctx, wiring))
    return {"model_dir": art["final_dir"], "metrics": art.get("metrics"), "steps": art.get("steps"),
            "train_loss": art.get("train_loss"), "eval_loss": art.get("eval_loss"),
            "eval_loss_first": art.get("eval_loss_first")}


def run_grpo(ctx: StageContext) -> dict[str, Any]:
    """GRPO from the input model; a model reward (stage 4 of R1) gets the reward model's folder through
    ``reward_model.ENV_VAR`` while the stage runs (GRPO user rewards are plain ``fn(completion, problem)``)."""
    import os

    from r1lab.pipeline.reward_model import ENV_VAR
    from r1lab.rl import grpo

    wiring = {"out_dir": str(ctx.out_dir), "model": ctx.inputs["model"]["model_dir"], "resume": True}
    before = os.environ.get(ENV_VAR)
    if "reward_model" in ctx.inputs:
        os.environ[ENV_VAR] = ctx.inputs["reward_model"]["model_dir"]
    try:
        art = grpo.run_grpo(_fill(grpo.GRPOConfig, ctx, wiring))
    finally:
        if before is None:
            os.environ.pop(ENV_VAR, None)
        else:
            os.environ[ENV_VAR] = before
    return {"model_dir": art["final_dir"], "metrics": art.get("metrics"), "steps": art.get("steps_done"),
            "eval_first": art.get("eval_first"), "eval_last": art.get("eval_last"), "minutes": art.get("minutes")}


def _scalars(art: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in art.items() if isinstance(v, int | float | str) and k not in ("model_dir", "metrics")}


# ------------------------------------------------------------------------------------------------ eval
@dataclass
class EvalStage:
    """pass@1 / cons@k on the held-out test split (and optional local benchmark files)."""

    n_per_family: int = 12
    """Test problems per task family."""
    difficulty: int = 1
    """Difficulty of the test problems."""
    families: list[str] | None = None
    """Task families (None = all generative ones)."""
    k: int = 4
    """Samples per problem."""
    temperature: float = 0.6
    top_p: float = 0.95
    max_tokens: int = 160
    """Max new tokens per sample."""
    template: str = "r1-zero"
    """Prompt style: "r1-zero" | "r1" | "plain"."""
    greedy: bool = True
    """Also measure greedy accuracy."""
    seed: int = 0
    benchmarks: list[dict] = field(default_factory=list)
    """Extra local files: [{"path": ..., "format": "gsm8k" | "math", "limit": 100}]."""


def run_eval(ctx: StageContext) -> dict[str, Any]:
    from r1lab.pipeline.evaluate import evaluate, load_benchmark
    from r1lab.pipeline.generation import load_generator
    from r1lab.tasks import make_split

    c = _cfg(EvalStage, ctx)
    model_dir = ctx.inputs["model"]["model_dir"]
    generate = load_generator(model_dir)
    tok = generate.tokenizer  # type: ignore[attr-defined]
    problems = make_split("test", c.n_per_family, c.difficulty, c.families, c.seed, strict=False)
    kw = dict(k=c.k, temperature=c.temperature, top_p=c.top_p, max_tokens=c.max_tokens, template=c.template,
              greedy=c.greedy, tokenizer=tok, seed=c.seed)
    res = evaluate(generate, problems, **kw)
    print(res.table(), flush=True)
    out: dict[str, Any] = {"model_dir": model_dir, "test": res.summary(), "benchmarks": {}}
    for b in c.benchmarks:
        bench = load_benchmark(b["path"], b["format"], b.get("limit"))
        out["benchmarks"][Path(b["path"]).name] = evaluate(generate, bench, **kw).summary()
    ctx.out_dir.mkdir(parents=True, exist_ok=True)
    path = ctx.out_dir / "eval.json"
    path.write_text(json.dumps(out, indent=2), encoding="utf-8")
    with (ctx.out_dir / "records.jsonl").open("w", encoding="utf-8") as fh:
        for r in res.records:
            fh.write(json.dumps(dataclasses.asdict(r), ensure_ascii=False) + "\n")
    return {"eval": str(path), "model_dir": model_dir, "pass@1": res.pass_at_1, "cons@k": res.cons_at_k,
            "k": res.k, "mean_response_tokens": res.mean_response_tokens,
            "language_mixing_rate": res.language_mixing_rate, "greedy": res.greedy_accuracy}


# ------------------------------------------------------------------------------------------------ SFT data
def r1_summary(problem: Any) -> str:
    """The summary of an R1-format response: states the answer in the form the family's checker reads
    (\\boxed{} for math, ``<answer>`` ending the text for countdown's TinyZero rule, the fenced code for code)."""
    if problem.family == "code":
        return f"The answer is:\n{problem.answer}"
    if problem.family == "countdown":
        return f"The answer is <answer> {problem.answer} </answer>"
    if problem.lang == "zh":
        return f"答案是 \\boxed{{{problem.answer}}}。"
    return f"The answer is \\boxed{{{problem.answer}}}."


def worked_to_r1(problem: Any) -> str:
    """A worked task solution rewritten into the R1 format (reasoning = the solution, summary = the answer)."""
    from r1lab.data.templates import format_r1_response

    return format_r1_response(problem.solution.strip(), r1_summary(problem))


def zero_to_r1(response: str, problem: Any) -> str:
    """An R1-Zero response (``<think> … </think> <answer> … </answer>``) rewritten into the R1 format."""
    from r1lab.data.templates import format_r1_response
    from r1lab.rewards.language import chain_of_thought

    return format_r1_response(chain_of_thought(response), r1_summary(problem))


@dataclass
class ColdStartStage:
    """Cold-start data: filtered R1-Zero outputs + worked solutions, both in the R1 format."""

    n_per_family: int = 30
    """Train prompts per family sampled from the R1-Zero model."""
    k: int = 4
    temperature: float = 0.8
    max_tokens: int = 160
    max_response_tokens: int = 150
    n_worked_per_family: int = 60
    """Worked task solutions per family rewritten into the R1 format."""
    difficulty: int = 1
    seed: int = 1


def _train_problems(n: int, difficulty: int, seed: int) -> list[Any]:
    from r1lab.tasks import make_split

    return make_split("train", n, difficulty, None, seed, strict=False)


def run_cold_start(ctx: StageContext) -> dict[str, Any]:
    from r1lab.data.corpus import write_jsonl_atomic
    from r1lab.pipeline.generation import load_generator
    from r1lab.pipeline.sample import rejection_sample, sft_row

    c = _cfg(ColdStartStage, ctx)
    generate = load_generator(ctx.inputs["model"]["model_dir"])
    problems = _train_problems(c.n_per_family, c.difficulty, c.seed)
    kept, stats = rejection_sample(generate, problems, None, k=c.k, temperature=c.temperature, max_tokens=c.max_tokens,
                                   style="r1-zero", tokenizer=generate.tokenizer,  # type: ignore[attr-defined]
                                   max_response_tokens=c.max_response_tokens, max_per_prompt=1, seed=c.seed)
    by_uid = {p.uid: p for p in problems}
    rows = [sft_row(by_uid[r["uid"]], zero_to_r1(r["response"], by_uid[r["uid"]]), "r1") | {"source": "r1-zero"}
            for r in kept]
    worked = _train_problems(c.n_worked_per_family, c.difficulty, c.seed + 1000)
    rows += [sft_row(p, worked_to_r1(p), "r1") | {"source": "worked"} for p in worked if p.solution]
    random.Random(c.seed).shuffle(rows)
    path = write_jsonl_atomic(rows, ctx.out_dir / "data.jsonl")
    return {"data": str(path), "rows": len(rows), "from_r1_zero": len(kept), "sampling": dataclasses.asdict(stats)}


@dataclass
class RejectStage:
    """Rejection sampling from a model (+ non-reasoning rows); tops up with worked solutions below ``min_rows``."""

    n_per_family: int = 30
    k: int = 4
    temperature: float = 0.7
    max_tokens: int = 160
    max_response_tokens: int = 150
    max_per_prompt: int = 2
    template: str = "r1"
    non_reasoning: bool = True
    """Add non-reasoning rows (short templated texts about numbers, no calculation) as in §2.3.3."""
    n_non_reasoning: int = 40
    min_rows: int = 64
    """If fewer rows survive, add worked solutions (R1 format) up to this many; counted as "topped_up"."""
    difficulty: int = 1
    seed: int = 2


def non_reasoning_rows(n: int, seed: int) -> list[dict[str, Any]]:
    """Short non-reasoning chat rows: a request for a few sentences about numbers and a templated answer."""
    from r1lab.data.corpus import plain_document
    from r1lab.data.templates import format_r1_response

    rng = random.Random(f"non-reasoning:{seed}")
    rows = []
    for i in range(n):
        lang = "zh" if i % 4 == 3 else "en"
        prompt = "写几句关于数字的话。" if lang == "zh" else "Write a few sentences about numbers."
        think = "用户想要几句关于数字的话，不需要计算。" if lang == "zh" else "The user wants a few sentences; no calculation."
        response = format_r1_response(think, plain_document(rng, lang))
        rows.append({"prompt": prompt, "response": response, "style": "r1", "source": "non-reasoning", "lang": lang})
    return rows


def run_reject(ctx: StageContext) -> dict[str, Any]:
    from r1lab.data.corpus import write_jsonl_atomic
    from r1lab.pipeline.generation import load_generator
    from r1lab.pipeline.sample import rejection_sample, sft_row

    c = _cfg(RejectStage, ctx)
    generate = load_generator(ctx.inputs["model"]["model_dir"])
    problems = _train_problems(c.n_per_family, c.difficulty, c.seed)
    rows, stats = rejection_sample(generate, problems, None, k=c.k, temperature=c.temperature,
                                   max_tokens=c.max_tokens, style=c.template,
                                   tokenizer=generate.tokenizer,  # type: ignore[attr-defined]
                                   max_response_tokens=c.max_response_tokens, max_per_prompt=c.max_per_prompt,
                                   seed=c.seed)
    if c.template == "r1-zero":
        by_uid = {p.uid: p for p in problems}
        rows = [sft_row(by_uid[r["uid"]], zero_to_r1(r["response"], by_uid[r["uid"]]), "r1") for r in rows]
    rows = [r | {"source": "rejection"} for r in rows]
    topped = 0
    if len(rows) < c.min_rows:
        extra = _train_problems(c.min_rows, c.difficulty, c.seed + 1000)
        for p in extra[: c.min_rows - len(rows)]:
            rows.append(sft_row(p, worked_to_r1(p), "r1") | {"source": "worked"})
            topped += 1
        print(f"{ctx.name}: only {stats.kept} samples survived; topped up with {topped} worked solutions", flush=True)
    if c.non_reasoning:
        rows += non_reasoning_rows(c.n_non_reasoning, c.seed)
    random.Random(c.seed).shuffle(rows)
    path = write_jsonl_atomic(rows, ctx.out_dir / "data.jsonl")
    return {"data": str(path), "rows": len(rows), "kept": stats.kept, "topped_up": topped,
            "sampling": dataclasses.asdict(stats)}


# ------------------------------------------------------------------------------------------------ HF student
@dataclass
class HFModelStage:
    """A randomly initialised transformers model (Qwen2 or Llama architecture) saved in HF format."""

    architecture: str = "qwen2"
    """"qwen2" | "llama"."""
    hidden_size: int = 128
    num_hidden_layers: int = 4
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    intermediate_size: int = 384
    max_position_embeddings: int = 512
    seed: int = 0


def run_hf_model(ctx: StageContext) -> dict[str, Any]:
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig, Qwen2Config

    from r1lab.data.tokenizer import load_tokenizer

    c = _cfg(HFModelStage, ctx)
    classes = {"qwen2": Qwen2Config, "llama": LlamaConfig}
    if c.architecture not in classes:
        raise ValueError(f"{ctx.name}: architecture must be one of {sorted(classes)}, got {c.architecture!r}")
    tok = load_tokenizer(ctx.inputs["tokenizer"]["tokenizer_dir"])
    config = classes[c.architecture](
        vocab_size=tok.vocab_size, hidden_size=c.hidden_size, num_hidden_layers=c.num_hidden_layers,
        num_attention_heads=c.num_attention_heads, num_key_value_heads=c.num_key_value_heads,
        intermediate_size=c.intermediate_size, max_position_embeddings=c.max_position_embeddings,
        bos_token_id=tok.bos_id, eos_token_id=tok.eos_id, pad_token_id=tok.pad_id, tie_word_embeddings=False)
    torch.manual_seed(c.seed)
    model = AutoModelForCausalLM.from_config(config)
    out = ctx.out_dir / "model"
    model.save_pretrained(out)
    tok.save(out)
    n = sum(p.numel() for p in model.parameters())
    return {"model_dir": str(out), "architecture": c.architecture, "parameters": n}


# ------------------------------------------------------------------------------------------------ report
@dataclass
class ReportStage:
    """report.md, plots and results.json for the run directory."""

    k_note: str = ""
    """Free text added to the report's setup section."""


def run_report(ctx: StageContext) -> dict[str, Any]:
    from r1lab.pipeline.report import write_report

    c = _cfg(ReportStage, ctx)
    return write_report(ctx.run_dir, ctx.out_dir, note=c.k_note)


RUNNERS = {
    "tokenizer": run_tokenizer, "pretrain": run_pretrain, "sft": run_sft, "grpo": run_grpo, "eval": run_eval,
    "cold_start": run_cold_start, "reject": run_reject, "hf_model": run_hf_model, "report": run_report,
}


def runners() -> dict[str, Any]:
    """Kind → runner, including the reward model (its own module)."""
    from r1lab.pipeline.reward_model import run_reward_model

    return {**RUNNERS, "reward_model": run_reward_model}
