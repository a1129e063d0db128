"""Context extension: YaRN rope parameters, phase lengths, passkey documents and the passkey probe (tiny sizes; the
real retrieval result comes from benchmarks/passkey.py)."""

from __future__ import annotations

import dataclasses
import json
import random
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from train_helpers import make_env, tiny_config

from r1lab.train.context import (
    ExtendContextConfig,
    filler_blocks_for,
    passkey_accuracy,
    passkey_text,
    run_extend_context,
    trained_length,
    yarn_rope,
)


def test_passkey_text_places_key_at_depth():
    rng = random.Random(0)
    first, key1 = passkey_text(rng, 10, depth=0.0)
    last, key2 = passkey_text(rng, 10, depth=1.0)
    assert first.index(key1) < first.index("The grass") and last.index(key2) > last.rindex("The grass")
    assert len(key1) == 5 and key1.isdigit()


def test_yarn_rope_rejects_shrinking():
    assert yarn_rope(256, 1024)["original_max_position_embeddings"] == 256
    with pytest.raises(ValueError):
        yarn_rope(512, 256)


def test_two_phase_extension(tmp_path):
    torch.set_num_threads(1)
    env = make_env(tmp_path / "env")
    from r1lab.data.tokenizer import load_tokenizer
    from r1lab.model import DeepSeekV3Config, DeepSeekV3ForCausalLM
    from r1lab.train.pretrain import run_pretrain

    base = run_pretrain(tiny_config(env, tmp_path / "base", steps=3))
    # original_len and phases unset: the base's training length (seq_len 32, not max_position_embeddings 128), then
    # phases at 2× and 4× it
    cfg = ExtendContextConfig(model_dir=base["model_dir"], steps=[2, 2], micro_batch=[2, 1], corpus=[env["corpus"]],
                              passkey_docs=20, out_dir=str(tmp_path / "x"), eval_passkey=2, device="cpu")
    report = run_extend_context(cfg)
    assert [p["length"] for p in report["phases"]] == [64, 128]
    assert report["model_dir"] == str(tmp_path / "x" / "phase-2" / "model")  # as the help says
    assert all(p["final_loss"] < 10 for p in report["phases"])
    final = DeepSeekV3Config.from_pretrained(report["model_dir"])
    assert final.rope_parameters["rope_type"] == "yarn" and final.rope_parameters["factor"] == 4.0
    assert final.rope_parameters["original_max_position_embeddings"] == 32 and final.max_position_embeddings == 128
    # phase 2 trained on 128-token rows
    rows = [json.loads(x) for x in (tmp_path / "x" / "phase-2" / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 2
    metrics_cfg = json.loads((tmp_path / "x" / "phase-2" / "checkpoints" / "step-000002" / "train_config.json")
                             .read_text())
    assert metrics_cfg["seq_len"] == 128
    assert set(report["passkey"]) == {"base", "extended"} and set(report["passkey"]["base"]) == {32, 64, 128}
    model = DeepSeekV3ForCausalLM.from_pretrained(report["model_dir"])
    tok = load_tokenizer(base["model_dir"])
    assert 0.0 <= passkey_accuracy(model, tok, 128, n=2) <= 1.0
    assert filler_blocks_for(tok, 2000) > filler_blocks_for(tok, 1000) > 0
    # a second fresh run into the same out_dir is refused; --resume keeps the finished phases
    from r1lab.train.pretrain import RunExistsError

    again = dataclasses.replace(cfg, eval_passkey=0)
    with pytest.raises(RunExistsError, match=r"already holds an extension run \(phase-1: checkpoints/step-000002"):
        run_extend_context(again)
    resumed = run_extend_context(dataclasses.replace(again, resume=True))
    assert resumed["model_dir"] == report["model_dir"] and [p["length"] for p in resumed["phases"]] == [64, 128]
    assert len((tmp_path / "x" / "phase-2" / "metrics.jsonl").read_text().splitlines()) == 2


def test_trained_length_reads_the_pretraining_run(tmp_path):
    run = tmp_path / "run"
    (run / "model").mkdir(parents=True)
    assert trained_length(run / "model") is None  # no run beside it: the caller falls back to max_position_embeddings
    for step, seq_len in ((2, 64), (4, 256)):
        ckpt = run / "checkpoints" / f"step-{step:06d}"
        ckpt.mkdir(parents=True)
        (ckpt / "training_state.pt").write_bytes(b"")
        (ckpt / "train_config.json").write_text(json.dumps({"seq_len": seq_len}))
    assert trained_length(run / "model") == 256  # the newest checkpoint
    assert trained_length(run / "checkpoints" / "step-000002") == 64  # a checkpoint dir as the model dir


def test_phases_must_start_above_the_training_length(tmp_path):
    from r1lab.model import DeepSeekV3Config

    model = tmp_path / "model"
    DeepSeekV3Config.from_preset("tiny").save_pretrained(model)
    with pytest.raises(ValueError, match=r"start above original_len 128 .*got \[64, 256\]"):
        run_extend_context(ExtendContextConfig(model_dir=str(model), phases=[64, 256], out_dir=str(tmp_path / "x")))
    with pytest.raises(ValueError, match=r"phases \[256, 512\], steps \[1\] and micro_batch"):
        run_extend_context(ExtendContextConfig(model_dir=str(model), steps=[1], out_dir=str(tmp_path / "x")))
