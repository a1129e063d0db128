"""Long-context extension with YaRN in two phases (DeepSeek-V3 report §4.3), scaled down, plus a passkey-retrieval probe.

V3 extends 4K → 32K → 128K with two 1000-step phases; both phases use the same YaRN setting (scale s = 40 relative to
the original 4K, α = 1, β = 32, attention temperature √t = 0.1·ln s + 1) applied to the decoupled RoPE key/query only,
and train on longer sequences at a constant small LR. Here: ``phases`` (e.g. 128 → 256 → 512 on CPU, 1024 → 4096 on
GPU) set ``rope_parameters = {"rope_type": "yarn", "factor": final / original, "original_max_position_embeddings":
original}`` from the first phase on, and each phase is a short ``run_pretrain`` continuation at that sequence length.

Passkey retrieval (Mohtashami & Jaggi 2023, "Landmark Attention"): a random 5-digit key hidden at a random depth in
repetitive filler, asked for at the end. Deliberate difference: our models are far too small to do this zero-shot, so
a share of the training documents (``passkey_frac``) are passkey documents — the base model sees them at its own length,
the extension phases at theirs; the probe then asks whether retrieval works at a length the model was *extended* to.

Legend: L sequence length in tokens.
"""

from __future__ import annotations

import dataclasses
import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

FILLER = ("The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again. ")
INTRO = "There is a pass key hidden in this text. Find it and remember it. "
QUESTION = "What is the pass key? The pass key is"


def passkey_text(rng: random.Random, n_filler: int, depth: float | None = None) -> tuple[str, str]:
    """(prompt ending in "The pass key is", key): ``n_filler`` filler blocks with the key sentence at ``depth``
    (a fraction in [0, 1]; random when None).

    >>> prompt, key = passkey_text(random.Random(0), 2, depth=0.0)
    >>> prompt.count("The grass is green"), f"The pass key is {key}." in prompt, prompt.endswith("pass key is")
    (2, True, True)
    """
    key = str(rng.randint(10000, 99999))
    depth = rng.random() if depth is None else depth
    at = round(depth * n_filler)
    blocks = [FILLER] * n_filler
    blocks.insert(at, f"The pass key is {key}. Remember it. {key} is the pass key. ")
    return INTRO + "".join(blocks) + QUESTION, key


def filler_blocks_for(tokenizer: Any, n_tokens: int) -> int:
    """How many filler blocks make a passkey prompt of about ``n_tokens`` tokens (BOS and answer included)."""
    rng = random.Random(0)
    base = len(tokenizer.encode(passkey_text(rng, 0)[0])) + 8
    block = len(tokenizer.encode(FILLER))
    return max(0, (n_tokens - base) // block)


def write_passkey_corpus(path: Path, tokenizer: Any, max_tokens: int, n_docs: int, seed: int) -> Path:
    """JSONL of passkey documents (prompt + " KEY.") with lengths spread uniformly up to ``max_tokens``."""
    rng = random.Random(f"r1lab.passkey:{seed}:{max_tokens}")
    top = filler_blocks_for(tokenizer, max_tokens)
    with open(path, "w", encoding="utf-8") as fh:
        for _ in range(n_docs):
            prompt, key = passkey_text(rng, rng.randint(0, top))
            fh.write(json.dumps({"text": f"{prompt} {key}."}) + "\n")
    return path


@torch.no_grad()
def passkey_accuracy(model: Any, tokenizer: Any, length: int, n: int = 20, seed: int = 1,
                     device: torch.device | str = "cpu") -> float:
    """Share of ``n`` passkey prompts of about ``length`` tokens (key at depths spread over 0..1) whose 5-digit key
    the model completes exactly by greedy decoding."""
    from r1lab.train.quick_eval import greedy_generate

    rng = random.Random(f"r1lab.passkey.eval:{seed}:{length}")
    blocks = filler_blocks_for(tokenizer, length)
    prompts, keys = [], []
    for i in range(n):
        prompt, key = passkey_text(rng, blocks, depth=i / max(n - 1, 1))
        prompts.append(tokenizer.encode(prompt, add_bos=True))
        keys.append(key)
    hits = 0
    for s in range(0, n, 8):
        outs = greedy_generate(model, prompts[s: s + 8], 8, tokenizer.eos_id, tokenizer.pad_id, device=device)
        for ids, key in zip(outs, keys[s: s + 8]):
            digits = "".join(ch for ch in tokenizer.decode(ids, skip_special_tokens=True) if ch.isdigit())
            hits += digits[:5] == key
    return hits / n


def yarn_rope(original: int, target: int, beta_fast: float = 32.0, beta_slow: float = 1.0) -> dict[str, Any]:
    """``rope_parameters`` for YaRN from ``original`` to ``target`` tokens (V3: factor 40, β_fast 32, β_slow 1).

    >>> yarn_rope(128, 512)["factor"]
    4.0
    """
    if target <= original:
        raise ValueError(f"target length {target} must exceed the original {original}")
    return {"rope_type": "yarn", "factor": target / original, "original_max_position_embeddings": original,
            "beta_fast": beta_fast, "beta_slow": beta_slow, "mscale": 1.0, "mscale_all_dim": 1.0}


@dataclass
class ExtendContextConfig:
    """Two-phase (or n-phase) YaRN context extension of a pretrained model."""

    model_dir: str = "runs/pretrain/model"
    """The base model (an r1lab model dir with its tokenizer, e.g. <pretrain out_dir>/model)."""
    original_len: int = 0
    """Context the base model was trained at (0 = the seq_len of the pretraining run that wrote ``model_dir``, read
    from <model_dir>/train_config.json or <model_dir>/../checkpoints/step-*/train_config.json; else the model
    config's max_position_embeddings)."""
    phases: list[int] = field(default_factory=list)
    """Sequence length of each phase; the last one is the target (YaRN factor = last / original_len). Empty = two
    phases at 2× and 4× original_len (a cpu-demo model trained at 256 tokens: 512 then 1024)."""
    steps: list[int] = field(default_factory=lambda: [400, 1000])
    """Optimizer steps of each phase."""
    micro_batch: list[int] = field(default_factory=lambda: [8, 4])
    """Rows per micro-batch of each phase (V3 shrinks the batch as the length grows)."""
    lr: float = 1e-3
    """Constant learning rate of the phases (V3: 7.3e-6 at its scale)."""
    corpus: list[str] = field(default_factory=list)
    """Regular corpus mixed in (empty = the built-in task corpus)."""
    passkey_docs: int = 4000
    """Synthetic passkey documents per phase (lengths up to the phase length)."""
    out_dir: str = "runs/extend"
    """Run directory: phase-1/, phase-2/, ... (each a pretrain run dir); the final model is the last phase's,
    <out_dir>/phase-N/model (also printed and in <out_dir>/summary.json as model_dir)."""
    seed: int = 0
    """Seed of the passkey documents and the data order."""
    device: str = "auto"
    """Device as in PretrainConfig."""
    eval_passkey: int = 20
    """Passkey prompts per length in the final probe (0 disables)."""
    progress: bool = False
    """Progress bars of the phases."""
    resume: bool = False
    """Continue an interrupted extension in out_dir (each phase resumes from its last checkpoint; finished phases are
    kept). Without it, an out_dir whose phases already hold a run is refused."""


def trained_length(model_dir: str | Path) -> int | None:
    """The seq_len the model in ``model_dir`` was trained at, from the pretraining run that wrote it: the dir's own
    train_config.json (a checkpoint dir) or that of the newest checkpoint beside it (``<run>/model`` next to
    ``<run>/checkpoints/step-*``, the layout of ``r1lab pretrain`` and of an extension phase); None if neither."""
    from r1lab.train.loop import TRAIN_CONFIG_FILE, latest_checkpoint

    model_dir = Path(model_dir)
    candidates = [model_dir / TRAIN_CONFIG_FILE]
    ckpt = latest_checkpoint(model_dir.parent / "checkpoints")
    if ckpt is not None:
        candidates.append(ckpt / TRAIN_CONFIG_FILE)
    for path in candidates:
        try:
            seq_len = json.loads(path.read_text(encoding="utf-8")).get("seq_len")
        except (OSError, ValueError, AttributeError):
            continue
        if isinstance(seq_len, int) and not isinstance(seq_len, bool) and seq_len > 0:
            return seq_len
    return None


def _refuse_existing_phases(out: Path, n_phases: int) -> None:
    """A fresh extension must not mix with an earlier one's phase runs (``r1lab.train.pretrain.existing_run``)."""
    from r1lab.train.pretrain import RunExistsError, existing_run

    for k in range(1, n_phases + 1):
        found = existing_run(out / f"phase-{k}")
        if found is not None:
            raise RunExistsError(f"{out} already holds an extension run (phase-{k}: {found}); pass --resume to "
                                 "continue it or choose another --out-dir")


def run_extend_context(cfg: ExtendContextConfig) -> dict[str, Any]:
    """Runs the phases; returns {"model_dir", "rope_parameters", "phases": [artifacts...], "passkey": {...}}."""
    from r1lab.data.tokenizer import load_tokenizer
    from r1lab.model import DeepSeekV3Config
    from r1lab.train.data import ensure_corpus
    from r1lab.train.pretrain import PretrainConfig, resolve_device, run_pretrain

    base = DeepSeekV3Config.from_pretrained(cfg.model_dir)
    original = cfg.original_len or trained_length(cfg.model_dir) or base.max_position_embeddings
    phases = list(cfg.phases) or [2 * original, 4 * original]
    if len(cfg.steps) != len(phases) or len(cfg.micro_batch) != len(phases):
        raise ValueError(f"phases {phases}, steps {cfg.steps} and micro_batch {cfg.micro_batch} need equal lengths")
    if sorted(phases) != phases or phases[0] <= original:
        raise ValueError(f"phases must increase and start above original_len {original} (the base model's training "
                         f"length), got {phases}; set --phases (or --original-len)")
    if not cfg.resume:
        _refuse_existing_phases(Path(cfg.out_dir), len(phases))
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = load_tokenizer(cfg.model_dir)
    corpus = ensure_corpus(cfg.corpus, out, 300, [1, 2], cfg.seed)
    rope = yarn_rope(original, phases[-1])
    model_dir, results = cfg.model_dir, []
    for k, (length, steps, micro) in enumerate(zip(phases, cfg.steps, cfg.micro_batch), start=1):
        phase_dir = out / f"phase-{k}"
        phase_dir.mkdir(exist_ok=True)
        keys = write_passkey_corpus(phase_dir / "passkey.jsonl", tokenizer, length, cfg.passkey_docs, cfg.seed + k)
        pcfg = PretrainConfig(model_dir=model_dir, tokenizer=cfg.model_dir, corpus=[*corpus, str(keys)],
                              model_overrides={"rope_parameters": rope, "max_position_embeddings": phases[-1]},
                              seq_len=length, micro_batch=micro, steps=steps, lr=cfg.lr, warmup_steps=0,
                              schedule="constant", fim_rate=0.0, gamma_zero_frac=0.0, eval_every=0, ckpt_every=0,
                              exact_match=0, out_dir=str(phase_dir), seed=cfg.seed + k, device=cfg.device,
                              progress=cfg.progress, eval_frac=0.01, resume=cfg.resume)
        art = run_pretrain(pcfg)
        results.append({"length": length, "steps": steps, "final_loss": art["final_loss"],
                        "heldout_loss": art["heldout_loss"], "model_dir": art["model_dir"]})
        model_dir = art["model_dir"]
    report: dict[str, Any] = {"model_dir": model_dir, "rope_parameters": rope, "phases": results}
    if cfg.eval_passkey > 0:
        report["passkey"] = passkey_table(cfg.model_dir, model_dir, [original, *phases], cfg.eval_passkey,
                                          resolve_device(cfg.device))
    from r1lab.data.stream import write_text_atomic

    write_text_atomic(out / "summary.json", json.dumps(report, indent=2, default=str) + "\n")
    return report


def passkey_table(base_dir: str, extended_dir: str, lengths: list[int], n: int, device) -> dict[str, dict[int, float]]:
    """Passkey accuracy of the base and the extended model at each length; prints a small table."""
    from r1lab.data.tokenizer import load_tokenizer
    from r1lab.model import DeepSeekV3ForCausalLM

    tokenizer = load_tokenizer(base_dir)
    table = {}
    for name, d in (("base", base_dir), ("extended", extended_dir)):
        model = DeepSeekV3ForCausalLM.from_pretrained(d, device=device)
        table[name] = {length: passkey_accuracy(model, tokenizer, length, n, device=device) for length in lengths}
    print(f"passkey retrieval ({n} prompts per length, greedy):")
    print(f"  {'length':>8}" + "".join(f"{name:>10}" for name in table))
    for length in lengths:
        print(f"  {length:>8}" + "".join(f"{100 * table[name][length]:>9.0f}%" for name in table))
    return table


def config_as_dict(cfg: ExtendContextConfig) -> dict[str, Any]:
    return dataclasses.asdict(cfg)
