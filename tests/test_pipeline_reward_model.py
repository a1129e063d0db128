"""Reward model: preference pairs, Bradley–Terry loss decreases, a held-out pair is ranked correctly, the two views
(helpfulness on the summary, harmlessness on the whole response), save/load and the GRPO reward function."""

from __future__ import annotations

import random

import pytest
import torch

from r1lab.pipeline.reward_model import (ENV_VAR, RewardModel, accuracy, bradley_terry_loss, build_pairs, model_reward,
                                         pairs_for_row, summary_of, train_reward_model)
from r1lab.pipeline.sample import sft_row
from r1lab.pipeline.stages import worked_to_r1
from r1lab.tasks import make_split


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    from r1lab.data.tokenizer import load_tokenizer, train_tokenizer

    texts = [worked_to_r1(p) for p in make_split("train", 30, families=["arithmetic", "word"])]
    d = tmp_path_factory.mktemp("tok")
    train_tokenizer(texts * 3, 300, d)
    return load_tokenizer(d)


def rows(split: str, n: int):
    return [sft_row(p, worked_to_r1(p), "r1") for p in make_split(split, n, families=["arithmetic"])]


def test_pairs_cover_the_three_preferences():
    (row,) = rows("train", 1)
    pairs = pairs_for_row(row, random.Random(0))
    assert sorted(p.why for p in pairs) == ["answers > evades", "concise > long", "correct > incorrect",
                                            "single-language > mixed"]
    correct = next(p for p in pairs if p.head == "helpful")
    assert summary_of(correct.chosen) != summary_of(correct.rejected)  # the summary view differs
    long = next(p for p in pairs if p.why == "concise > long")
    assert len(long.rejected) > len(long.chosen) and summary_of(long.rejected) == summary_of(long.chosen)


def test_bradley_terry_training_lowers_loss_and_ranks_heldout(tokenizer):
    from r1lab.model import DeepSeekV3Config, DeepSeekV3ForCausalLM

    torch.manual_seed(0)
    cfg = DeepSeekV3Config.from_preset("tiny").replace(vocab_size=320, max_position_embeddings=512)
    rm = RewardModel(DeepSeekV3ForCausalLM(cfg), tokenizer, max_len=96)
    train = build_pairs(rows("train", 16), 40, seed=0)
    # held-out pairs of the kinds a tiny model can learn from surface features (correct > incorrect needs the RM
    # to do the arithmetic itself; it is trained on but not asserted)
    held = [p for p in build_pairs(rows("test", 4), 16, seed=1) if p.why != "correct > incorrect"]
    assert {p.head for p in held} == {"helpful", "harmless"}
    with torch.no_grad():
        first = float(bradley_terry_loss(*rm.pair_scores(train)))
    assert first == pytest.approx(0.6931, abs=1e-3)  # zero-initialised heads: r⁺ = r⁻
    losses = train_reward_model(rm, train, steps=20, batch_size=12, lr=3e-3, head_lr=3e-2, log=lambda s: None)
    with torch.no_grad():
        last = float(bradley_terry_loss(*rm.pair_scores(train)))
    assert last < first - 0.2 and losses[-1] < losses[0]
    assert accuracy(rm, held) == 1.0
    s = rm.scores(held[0].prompt, held[0].chosen)
    assert set(s) == {"helpful", "harmless", "combined"} and 0.0 <= s["combined"] <= 1.0
    assert rm.score(held[0].prompt, held[0].chosen) > rm.score(held[0].prompt, held[0].rejected)


def test_save_load_and_grpo_reward(tokenizer, tmp_path, monkeypatch):
    from r1lab.model import DeepSeekV3Config, DeepSeekV3ForCausalLM

    cfg = DeepSeekV3Config.from_preset("tiny").replace(vocab_size=320, max_position_embeddings=512)
    rm = RewardModel(DeepSeekV3ForCausalLM(cfg), tokenizer, max_len=64)
    with torch.no_grad():
        rm.heads["helpful"].bias.fill_(1.0)
    rm.save(tmp_path / "rm")
    again = RewardModel.load(tmp_path / "rm")
    (p,) = make_split("test", 1, families=["arithmetic"])
    text = worked_to_r1(p)
    assert again.score(p.prompt, text) == pytest.approx(rm.score(p.prompt, text), abs=1e-5)
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "rm"))
    assert model_reward(text.removeprefix("<think>\n"), p) == pytest.approx(rm.score(p.prompt, text), abs=1e-5)
    monkeypatch.delenv(ENV_VAR)
    with pytest.raises(RuntimeError, match=ENV_VAR):
        model_reward(text, p)
