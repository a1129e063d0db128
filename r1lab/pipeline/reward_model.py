"""A small reward model: scalar heads on a causal-LM backbone, trained with the Bradley–Terry loss on preference pairs.

Idea: R1 stage 4 (arXiv 2501.12948 §2.3.4) uses reward models for general data: "for helpfulness, we focus
exclusively on the final summary ... for harmlessness, we evaluate the entire response of the model, including both
the reasoning process and the summary". Preference reward models are trained with the Bradley–Terry objective
−log σ(r(x, y⁺) − r(x, y⁻)) (InstructGPT §3.5, DeepSeek-V3 §5.2.2).

Here: one backbone (ours, or any local HF causal LM) with two linear heads on the last token's final hidden state:
- ``helpful`` reads ``prompt + summary`` (text after ``</think>``); trained on correct > incorrect final answers
  and on a summary that states an answer > one that evades ("I am not sure.").
- ``harmless`` reads ``prompt + whole response``; trained on single-language > mixed-language reasoning and
  concise > padded-long reasoning. Deliberate difference: our tiny tasks have no harmful content, so this head
  learns *readability* preferences, the only "safety-like" signal the built-in data carries.
Pairs are built from SFT rows (``build_pairs``); ``combined = (σ(helpful) + σ(harmless)) / 2`` in [0, 1] is the
GRPO reward (``model_reward(completion, problem)``, reading the model folder from ``$R1LAB_REWARD_MODEL``).

Legend: B batch, T tokens, D hidden.
"""

from __future__ import annotations

import functools
import json
import os
import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

ENV_VAR = "R1LAB_REWARD_MODEL"
HEADS = ("helpful", "harmless")
FILLER_EN = "Let me restate the problem once more to be sure."
FILLER_ZH = "我再把题目重述一遍以确认。"
EVADE_EN = "I am not sure."
EVADE_ZH = "我不确定。"
FOREIGN_EN = "然后 我们 计算"  # Chinese words inserted into English reasoning
FOREIGN_ZH = "then we compute"


@dataclass(frozen=True)
class Pair:
    """A preference: for ``prompt``, ``chosen`` beats ``rejected`` on ``head``."""

    prompt: str
    chosen: str
    rejected: str
    head: str
    why: str


def summary_of(response: str) -> str:
    """The final summary: text after the last ``</think>`` (the whole response when there is none).

    >>> summary_of("<think>\\n2+3=5\\n</think>\\n\\nThe answer is 5."), summary_of("5")
    ('The answer is 5.', '5')
    """
    return response.rpartition("</think>")[2].strip()


def _wrong(answer: str) -> str:
    from r1lab.tasks.base import parse_int

    n = parse_int(answer)
    return str(n + 1) if n is not None else answer + "0"


def pairs_for_row(row: dict[str, Any], rng: random.Random) -> list[Pair]:
    """Four pairs from one correct R1-format SFT row (prompt, response, answer, lang): correct > incorrect and
    answers > evades (helpful, on the summary), concise > long and single-language > mixed (harmless, whole)."""
    prompt, resp, lang = row["prompt"], row["response"], row.get("lang", "en")
    out = []
    answer = row.get("answer")
    if answer and answer in resp and row.get("family") != "code":
        head, _, tail = resp.rpartition(answer)
        out.append(Pair(prompt, resp, head + _wrong(answer) + tail, "helpful", "correct > incorrect"))
    cot_end = resp.find("</think>")
    if cot_end > 0:
        evasive = EVADE_ZH if lang == "zh" else EVADE_EN
        out.append(Pair(prompt, resp, resp[: cot_end] + "</think>\n\n" + evasive, "helpful", "answers > evades"))
        filler = FILLER_ZH if lang == "zh" else FILLER_EN
        long = resp[:cot_end].rstrip() + (" " + filler) * rng.randint(3, 6) + "\n" + resp[cot_end:]
        out.append(Pair(prompt, resp, long, "harmless", "concise > long"))
        words = resp[:cot_end].split(" ")
        at = rng.randint(1, max(1, len(words) - 1))
        mixed = " ".join(words[:at] + [FOREIGN_ZH if lang == "zh" else FOREIGN_EN] + words[at:]) + resp[cot_end:]
        out.append(Pair(prompt, resp, mixed, "harmless", "single-language > mixed"))
    return out


def build_pairs(rows: Sequence[dict[str, Any]], n_pairs: int, seed: int = 0) -> list[Pair]:
    """Up to ``n_pairs`` preference pairs from correct R1-format rows (rows without an answer are skipped)."""
    rng = random.Random(seed)
    pairs = [p for r in rows if r.get("answer") for p in pairs_for_row(r, rng)]
    rng.shuffle(pairs)
    return pairs[:n_pairs]


def bradley_terry_loss(chosen_B: torch.Tensor, rejected_B: torch.Tensor) -> torch.Tensor:
    """mean −log σ(r⁺ − r⁻).

    >>> round(float(bradley_terry_loss(torch.tensor([0.0]), torch.tensor([0.0]))), 4)  # log 2
    0.6931
    """
    return -torch.nn.functional.logsigmoid(chosen_B - rejected_B).mean()


class RewardModel(nn.Module):
    """Backbone + one scalar head per entry of HEADS, read at the last real token."""

    def __init__(self, backbone: nn.Module, tokenizer: Any, max_len: int = 256) -> None:
        super().__init__()
        self.backbone, self.tokenizer, self.max_len = backbone, tokenizer, max_len
        hidden = backbone.config.hidden_size
        self.heads = nn.ModuleDict({h: nn.Linear(hidden, 1) for h in HEADS})
        for head in self.heads.values():
            nn.init.zeros_(head.weight)
            nn.init.zeros_(head.bias)
        self.heads.to(next(backbone.parameters()).device)

    def _hidden(self, ids_BT: torch.Tensor, mask_BT: torch.Tensor) -> torch.Tensor:
        pos_BT = (mask_BT.cumsum(1) - 1).clamp(min=0)
        from r1lab.model import DeepSeekV3ForCausalLM

        if isinstance(self.backbone, DeepSeekV3ForCausalLM):
            return self.backbone(ids_BT, attention_mask=mask_BT, position_ids=pos_BT).hidden_states
        out = self.backbone(input_ids=ids_BT, attention_mask=mask_BT, position_ids=pos_BT, output_hidden_states=True)
        return out.hidden_states[-1]

    def encode(self, prompts: Sequence[str], texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Left-padded ids and mask of ``prompt`` + ``text`` pairs (kept to their last ``max_len`` tokens)."""
        from r1lab.pipeline.generation import encode_prompt

        rows = [(encode_prompt(self.tokenizer, p) + self.tokenizer.encode(t))[-self.max_len :]
                for p, t in zip(prompts, texts, strict=True)]
        width = max(len(r) for r in rows)
        pad = self.tokenizer.pad_id
        ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows])
        mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
        device = next(self.parameters()).device
        return ids.to(device), mask.to(device)

    def forward(self, prompts: Sequence[str], texts: Sequence[str], head: str) -> torch.Tensor:
        ids_BT, mask_BT = self.encode(prompts, texts)
        h_BD = self._hidden(ids_BT, mask_BT)[:, -1]  # left padding: the last column is every row's last token
        return self.heads[head](h_BD.float()).squeeze(-1)

    @torch.no_grad()
    def scores(self, prompt: str, response: str) -> dict[str, float]:
        """{"helpful": on the summary, "harmless": on the whole response, "combined": mean of their sigmoids}."""
        was = self.training
        self.eval()
        helpful = float(self([prompt], [summary_of(response)], "helpful")[0])
        harmless = float(self([prompt], [response], "harmless")[0])
        self.train(was)
        combined = (torch.sigmoid(torch.tensor(helpful)) + torch.sigmoid(torch.tensor(harmless))) / 2
        return {"helpful": helpful, "harmless": harmless, "combined": float(combined)}

    def score(self, prompt: str, response: str) -> float:
        """The combined reward in [0, 1]."""
        return self.scores(prompt, response)["combined"]

    def pair_scores(self, pairs: Sequence[Pair]) -> tuple[torch.Tensor, torch.Tensor]:
        """(chosen, rejected) scores of pairs, each with its head's view (summary for helpful)."""
        chosen, rejected = [], []
        for head in HEADS:
            sel = [p for p in pairs if p.head == head]
            if not sel:
                continue
            view = summary_of if head == "helpful" else (lambda s: s)
            chosen.append(self([p.prompt for p in sel], [view(p.chosen) for p in sel], head))
            rejected.append(self([p.prompt for p in sel], [view(p.rejected) for p in sel], head))
        return torch.cat(chosen), torch.cat(rejected)

    def save(self, out_dir: str | Path) -> None:
        from r1lab.train.models import save_causal_lm

        out = Path(out_dir)
        save_causal_lm(self.backbone, out / "backbone", self.tokenizer)
        torch.save({k: v.cpu() for k, v in self.heads.state_dict().items()}, out / "heads.pt")
        (out / "reward_model.json").write_text(json.dumps({"heads": list(HEADS), "max_len": self.max_len}) + "\n")

    @classmethod
    def load(cls, directory: str | Path, device: str = "auto") -> RewardModel:
        from r1lab.data.tokenizer import load_tokenizer
        from r1lab.pipeline.generation import resolve_device
        from r1lab.train.models import load_causal_lm

        device = resolve_device(device)
        d = Path(directory)
        meta = json.loads((d / "reward_model.json").read_text())
        rm = cls(load_causal_lm(d / "backbone", device), load_tokenizer(d / "backbone"), meta["max_len"])
        rm.heads.load_state_dict(torch.load(d / "heads.pt", map_location=device))
        return rm.to(device).eval()


def accuracy(rm: RewardModel, pairs: Sequence[Pair]) -> float:
    """Fraction of pairs whose chosen response scores higher."""
    with torch.no_grad():
        c, r = rm.pair_scores(pairs)
    return float((c > r).float().mean())


def train_reward_model(rm: RewardModel, pairs: Sequence[Pair], steps: int, batch_size: int = 16, lr: float = 1e-4,
                       head_lr: float = 1e-2, seed: int = 0, log=print) -> list[float]:
    """Bradley–Terry training; returns the loss per step."""
    rng = random.Random(seed)
    opt = torch.optim.AdamW([{"params": rm.backbone.parameters(), "lr": lr},
                             {"params": rm.heads.parameters(), "lr": head_lr}], weight_decay=0.0)
    rm.train()
    losses = []
    for step in range(1, steps + 1):
        batch = rng.sample(list(pairs), min(batch_size, len(pairs)))
        loss = bradley_terry_loss(*rm.pair_scores(batch))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(rm.parameters(), 1.0)
        opt.step()
        losses.append(loss.item())
        if step == 1 or step % 10 == 0 or step == steps:
            log(f"reward model step {step}/{steps} | bt loss {loss.item():.4f}")
    return losses


@functools.lru_cache(maxsize=2)
def _cached(directory: str) -> RewardModel:
    return RewardModel.load(directory)


def model_reward(completion: str, problem: Any) -> float:
    """GRPO reward ``(completion, problem) -> float``: the combined score of the model in ``$R1LAB_REWARD_MODEL``.

    The completion is read as an R1-format response (the forced ``<think>\\n`` is put back in front).
    """
    from r1lab.pipeline.generation import full_response

    directory = os.environ.get(ENV_VAR)
    if not directory:
        raise RuntimeError(f"model_reward needs ${ENV_VAR} = a reward-model folder (set by the pipeline)")
    return _cached(directory).score(problem.prompt, full_response(completion, "r1"))


# ------------------------------------------------------------------------------------------------ pipeline stage
@dataclass
class RewardModelStage:
    """Reward model on the pipeline's preference pairs (from an SFT data file)."""

    steps: int = 60
    n_pairs: int = 256
    heldout_frac: float = 0.2
    batch_size: int = 16
    max_len: int = 192
    lr: float = 1e-4
    head_lr: float = 1e-2
    seed: int = 0


def run_reward_model(ctx: Any) -> dict[str, Any]:
    """Pipeline stage: pairs from the ``data`` input's rows, backbone = the ``model`` input, save to out_dir/model."""
    from r1lab.data.tokenizer import load_tokenizer
    from r1lab.train.models import load_causal_lm

    c = RewardModelStage(**ctx.config)
    rows = [json.loads(line) for line in Path(ctx.inputs["data"]["data"]).read_text(encoding="utf-8").splitlines()
            if line.strip()]
    pairs = build_pairs(rows, c.n_pairs, c.seed)
    if len(pairs) < 4:
        raise ValueError(f"{ctx.name}: only {len(pairs)} preference pairs could be built from {ctx.inputs['data']}")
    n_held = max(2, int(len(pairs) * c.heldout_frac))
    held, train = pairs[:n_held], pairs[n_held:]
    torch.manual_seed(c.seed)
    model_dir = ctx.inputs["model"]["model_dir"]
    from r1lab.pipeline.generation import resolve_device

    rm = RewardModel(load_causal_lm(model_dir, resolve_device("auto")), load_tokenizer(model_dir), c.max_len)
    before = accuracy(rm, held)
    losses = train_reward_model(rm, train, c.steps, c.batch_size, c.lr, c.head_lr, c.seed)
    after = accuracy(rm, held)
    out = Path(ctx.out_dir) / "model"
    rm.save(out)
    stats = {"model_dir": str(out), "pairs": len(pairs), "heldout_pairs": n_held, "heldout_acc_before": before,
             "heldout_acc_after": after, "first_loss": losses[0] if losses else None,
             "last_loss": losses[-1] if losses else None, "config": asdict(c)}
    print(f"reward model: held-out pair accuracy {before:.2f} → {after:.2f}", flush=True)
    return stats
