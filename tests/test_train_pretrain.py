"""Pretraining loop: golden losses, exact kill-and-resume, crash-safe checkpoints, config-mismatch errors, bad corpora.

Regenerate the golden losses (after an intended change of the model or the loop) with
``python3 tests/test_train_pretrain.py --regen``.
"""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from conftest import needs_cxx
from train_helpers import make_env, tiny_config

GOLDEN = Path(__file__).parent / "golden" / "tiny_pretrain_losses.json"


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    torch.set_num_threads(1)
    return make_env(tmp_path_factory.mktemp("env"))


def _run(cfg):
    from r1lab.train.pretrain import run_pretrain

    return run_pretrain(cfg)


def test_golden_losses(env, tmp_path):
    golden = json.loads(GOLDEN.read_text())
    art = _run(tiny_config(env, tmp_path / "run", steps=20))
    assert len(art["losses"]) == 20
    assert art["losses"][0] == pytest.approx(math.log(320), rel=0.05)  # ~uniform over the vocab at init
    assert art["losses"][-1] < art["losses"][0] - 0.5  # it learns
    torch.testing.assert_close(torch.tensor(art["losses"]), torch.tensor(golden["losses"]), rtol=1e-4, atol=0)
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, 21))
    assert {"loss", "mtp", "bal", "load", "lr", "tok/s", "mfu", "eta_s"} <= set(rows[0])
    assert (tmp_path / "run" / "model" / "config.json").is_file()
    assert (tmp_path / "run" / "model" / "tokenizer.json").is_file()


@pytest.mark.parametrize("kw, rows", [({}, 320), ({"fit_vocab": False}, 2048),
                                       ({"model_overrides": {"vocab_size": 512}}, 512)])
def test_fresh_model_vocab_fits_the_tokenizer(env, tmp_path, kw, rows):
    """cpu-demo's preset has 2,048 vocabulary rows; with the 300-token tokenizer a fresh model gets 320 (rounded up
    to 64) unless fit_vocab is off or the overrides name a size."""
    art = _run(tiny_config(env, tmp_path / "run", preset="cpu-demo", steps=1, micro_batch=2, **kw))
    cfg = json.loads((Path(art["model_dir"]) / "config.json").read_text())
    assert cfg["vocab_size"] == rows
    from r1lab.train.models import model_from_preset

    assert model_from_preset("cpu-demo", 300, **kw.get("model_overrides", {}),
                             **({"fit_vocab": kw["fit_vocab"]} if "fit_vocab" in kw else {})
                             ).model.embed_tokens.num_embeddings == rows


def test_fitted_vocab_starts_from_the_unfitted_draws():
    """Fitting cuts the unused rows and changes nothing else: every parameter equals the unfitted model's (its first
    rows for the embedding and the head)."""
    from r1lab.train.models import model_from_preset

    full = model_from_preset("cpu-demo", 300, fit_vocab=False).state_dict()
    cut = model_from_preset("cpu-demo", 300).state_dict()
    assert full.keys() == cut.keys()
    shrunk = [k for k in full if full[k].shape != cut[k].shape]
    assert sorted(shrunk) == ["lm_head.weight", "model.embed_tokens.weight"]
    for k in full:
        assert torch.equal(full[k][: cut[k].shape[0]], cut[k]), k


def test_resume_matches_uninterrupted(env, tmp_path):
    full = _run(tiny_config(env, tmp_path / "full", steps=10, ckpt_every=4))
    part = _run(tiny_config(env, tmp_path / "part", steps=10, ckpt_every=4, stop_after=6))
    assert part["steps"] == 6 and "model_dir" not in part  # "killed" after step 6: last checkpoint is step 4
    ckpts = sorted(p.name for p in (tmp_path / "part" / "checkpoints").iterdir())
    assert ckpts == ["step-000004"]
    # a half-written checkpoint from a crash must be ignored and cleaned up
    junk = tmp_path / "part" / "checkpoints" / "ckpt.tmp-crash"
    junk.mkdir()
    (junk / "model.safetensors").write_bytes(b"\0" * 10)
    rest = _run(tiny_config(env, tmp_path / "part", steps=10, ckpt_every=4, resume=True))
    assert not junk.exists()
    assert rest["steps"] == 10
    # metrics.jsonl: the rows of steps 5-6 (logged after the step-4 checkpoint) were dropped and redone, once
    from r1lab.train.metrics import read_metrics

    rows = read_metrics(tmp_path / "part" / "metrics.jsonl")
    assert [r["step"] for r in rows] == list(range(1, 11))
    full_rows = read_metrics(tmp_path / "full" / "metrics.jsonl")
    torch.testing.assert_close(torch.tensor([r["loss"] for r in rows]), torch.tensor([r["loss"] for r in full_rows]),
                               rtol=1e-6, atol=0)
    torch.testing.assert_close(torch.tensor(rest["losses"]), torch.tensor(full["losses"][4:]), rtol=1e-6, atol=0)
    # the final models are identical, expert biases included
    from safetensors.torch import load_file

    a = load_file(str(tmp_path / "full" / "model" / "model.safetensors"))
    b = load_file(str(tmp_path / "part" / "model" / "model.safetensors"))
    assert a.keys() == b.keys()
    assert any(k.endswith("e_score_correction_bias") and a[k].abs().sum() > 0 for k in a)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-7)


def test_step_budget_fits_and_stops():
    from r1lab.train.budget import StepBudget

    b = StepBudget(minutes=1.0, skip=2, window=3)
    for t in (5.0, 5.0, 0.5, 0.7, 0.6):  # two warm-up steps (compilation) are not timed
        assert b.fitted(step=b.seen, elapsed_s=12.0, max_steps=10_000) is None
        b.record(t)
    assert b.times == [0.5, 0.7, 0.6]
    assert b.fitted(step=5, elapsed_s=12.0, max_steps=10_000) == 5 + int((57.0 - 12.0) // 0.6)
    assert b.fitted(step=6, elapsed_s=13.0, max_steps=10_000) is None  # fitted once
    assert not b.over(65.0) and b.over(67.0)
    assert StepBudget(minutes=0).fitted(100, 1e9, 10) is None and not StepBudget(minutes=0).over(1e9)


def fake_clock(monkeypatch, per_call: float):
    """The training loop's clock advances ``per_call`` seconds each time it is read (twice per step with a budget),
    so step times and budgets are exact whatever the machine's load."""
    import itertools

    import r1lab.train.pretrain as pretrain

    ticks = itertools.count()
    monkeypatch.setattr(pretrain, "_clock", lambda: next(ticks) * per_call)


def test_max_minutes_fits_the_schedule_and_survives_resume(env, tmp_path, monkeypatch):
    """A wall-clock budget: the step count is fitted after the timing window, so the cosine schedule still reaches
    its floor at the (earlier) last step; a run stopped after the fit and resumed ends at the same fitted count."""
    from r1lab.train.loop import load_training_state

    fake_clock(monkeypatch, 0.01)  # 0.02 s per step
    kw = dict(steps=100_000, max_minutes=0.05, warmup_steps=2, ckpt_every=30)  # 95 % of 3 s = 142 steps of 0.02 s
    art = _run(tiny_config(env, tmp_path / "full", **kw))
    assert art["steps"] == 142
    rows = [json.loads(x) for x in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["step"] == art["steps"] and (tmp_path / "full" / "model" / "config.json").is_file()
    assert rows[-1]["lr"] == pytest.approx(3e-3 * 0.1, rel=1e-6)  # the schedule ended: fitted, not cut
    assert rows[-1]["gamma"] == 0.0  # γ's zero tail follows the fitted count too

    part = _run(tiny_config(env, tmp_path / "part", stop_after=35, **kw))
    assert part["steps"] == 35 and "model_dir" not in part
    fitted = load_training_state(tmp_path / "part" / "checkpoints" / "step-000030" / "training_state.pt")["n_steps"]
    assert 30 < fitted < 100_000
    rest = _run(tiny_config(env, tmp_path / "part", resume=True, **kw))
    assert rest["steps"] == fitted


def test_max_minutes_hard_stop_when_steps_slow_down(env, tmp_path, monkeypatch):
    """Steps that get slower after the fit (a busy machine) hit the hard stop at 1.1 × the budget: the run saves its
    model and ends early rather than overrunning."""
    import itertools

    import r1lab.train.pretrain as pretrain

    ticks = itertools.count()

    def clock() -> float:  # 2 reads per step: steps 1-40 take 0.02 s, later ones 0.1 s
        n = next(ticks)
        return n * 0.01 if n < 80 else 0.8 + (n - 80) * 0.05

    monkeypatch.setattr(pretrain, "_clock", clock)
    art = _run(tiny_config(env, tmp_path / "run", steps=100_000, max_minutes=0.05, warmup_steps=2))
    # fitted to 142 steps at 0.02 s; at 0.1 s per step from step 41 the clock passes 3.3 s at step 66
    assert art["steps"] == 66 and (tmp_path / "run" / "model" / "config.json").is_file()
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["lr"] > 3e-3 * 0.1 * 1.01  # cut short: the schedule had not ended


def test_failed_compile_falls_back_to_eager(env, tmp_path, monkeypatch, capsys):
    """A backend that cannot compile the model (seen on new GPUs/toolchains) must not end a long run: the first step
    is redone eagerly, with the same numbers as a run that never tried (golden losses)."""

    class Broken(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, *a, **k):
            self.inner(*a, **k)  # counts routed tokens like a real first step would, then fails
            raise RuntimeError("backend compiler failed (test)")

    monkeypatch.setattr(torch, "compile", lambda model, **kw: Broken(model))
    art = _run(tiny_config(env, tmp_path / "run", steps=20, compile=True))
    assert "torch.compile failed (RuntimeError: backend compiler failed (test))" in capsys.readouterr().out
    golden = json.loads(GOLDEN.read_text())
    torch.testing.assert_close(torch.tensor(art["losses"]), torch.tensor(golden["losses"]), rtol=1e-4, atol=0)


@pytest.mark.slow
@needs_cxx
def test_compiled_pretraining_matches_golden_losses(env, tmp_path):
    """``--compile true`` (recommended on a GPU) runs the same numerics as eager: the first golden losses, through
    torch.compile on CPU's inductor (the grouped expert GEMM takes its per-expert fallback while tracing fp32)."""
    golden = json.loads(GOLDEN.read_text())
    art = _run(tiny_config(env, tmp_path / "run", steps=20, stop_after=3, compile=True))
    torch.testing.assert_close(torch.tensor(art["losses"]), torch.tensor(golden["losses"][:3]), rtol=1e-4, atol=0)


def test_doc_mask_off_trains_on_joined_rows(env, tmp_path):
    """doc_mask=False (V3's unmasked packing): the rows the loop sees are one sequence each, and the run learns."""
    from r1lab.data.tokenizer import load_tokenizer
    from r1lab.train.data import prepare_data

    cfg = tiny_config(env, tmp_path / "nomask", steps=12, doc_mask=False)
    data = prepare_data(cfg, load_tokenizer(env["tokenizer"]), cfg.corpus, env["tokenizer"], log=lambda *a: None)
    assert set(data.train.doc_ids_NT.unique().tolist()) == {0, 1}
    real = data.train.doc_ids_NT != 0
    starts = ((data.train.position_ids_NT == 0) & real).sum(dim=1)
    assert torch.equal(starts, real.any(dim=1).long())  # positions restart only at the row start
    masked_data = prepare_data(tiny_config(env, tmp_path / "m"), load_tokenizer(env["tokenizer"]), cfg.corpus,
                               env["tokenizer"], log=lambda *a: None)
    m_real = masked_data.train.doc_ids_NT != 0
    assert ((masked_data.train.position_ids_NT == 0) & m_real).sum() > m_real.any(dim=1).sum()  # several docs/row
    art = _run(cfg)
    masked = _run(tiny_config(env, tmp_path / "mask", steps=12))
    assert art["losses"][-1] < art["losses"][0] - 0.5
    assert art["losses"] != masked["losses"]  # a different objective, not a silently ignored flag


def test_resume_with_changed_config_names_fields(env, tmp_path):
    from r1lab.train.loop import ResumeMismatchError

    _run(tiny_config(env, tmp_path / "r", steps=4, ckpt_every=2, stop_after=2))
    with pytest.raises(ResumeMismatchError) as err:
        _run(tiny_config(env, tmp_path / "r", steps=4, lr=1e-3, seq_len=16, resume=True))
    msg = str(err.value)
    assert "lr: saved 0.003, now 0.001" in msg and "seq_len" in msg and "steps" not in msg


def test_fresh_run_refuses_a_directory_holding_a_run(env, tmp_path):
    """Without --resume a run must not mix its checkpoints and metrics with an earlier run's; a directory with only a
    corpus, a tokenizer or an empty log is fine."""
    from r1lab.train.pretrain import RunExistsError

    out = tmp_path / "r"
    _run(tiny_config(env, out, steps=4, ckpt_every=2, stop_after=3))
    with pytest.raises(RunExistsError) as err:
        _run(tiny_config(env, out, steps=4, ckpt_every=2))
    assert str(err.value) == (f"{out} already holds a run (checkpoints/step-000002, step 2); pass --resume to "
                              "continue it or choose another --out-dir")
    import shutil

    shutil.rmtree(out / "checkpoints")
    with pytest.raises(RunExistsError, match=r"\(metrics\.jsonl, 3 rows up to step 3\)"):
        _run(tiny_config(env, out, steps=4, ckpt_every=2))
    (out / "metrics.jsonl").write_text("")
    art = _run(tiny_config(env, out, steps=2, ckpt_every=0))  # nothing of a run left: allowed
    assert art["steps"] == 2


def test_resume_without_a_checkpoint_restarts_the_metrics(env, tmp_path):
    """The pipeline always passes resume=True: a stage killed before its first checkpoint restarts at step 0, and its
    metrics.jsonl restarts with it (no rows of the killed attempt left in front)."""
    from r1lab.train.metrics import read_metrics

    out = tmp_path / "stage"
    _run(tiny_config(env, out, steps=3, stop_after=2, resume=True))  # killed at step 2, before any checkpoint
    assert not (out / "checkpoints").exists() or not list((out / "checkpoints").iterdir())
    with open(out / "metrics.jsonl", "a") as fh:
        fh.write('{"step": 3, "loss": 1.0')  # a torn last line of the kill
    art = _run(tiny_config(env, out, steps=3, resume=True))
    assert art["steps"] == 3 and [r["step"] for r in read_metrics(out / "metrics.jsonl")] == [1, 2, 3]
    assert (out / "metrics.jsonl").read_text().endswith("}\n")


def test_cli_refuses_a_directory_holding_a_run(env, tmp_path, capsys):
    from r1lab.cli import main

    out = tmp_path / "o"
    argv = ["pretrain", "--corpus", env["corpus"], "--tokenizer", env["tokenizer"], "--preset", "tiny", "--seq-len",
            "32", "--micro-batch", "4", "--steps", "2", "--exact-match", "0", "--device", "cpu", "--out-dir", str(out),
            "--progress", "false"]
    assert main(argv) == 0
    capsys.readouterr()
    assert main(argv) == 2
    assert f"error: {out} already holds a run (checkpoints/step-000002, step 2); pass --resume" in capsys.readouterr().err
    assert main([*argv, "--resume"]) == 0  # continuing it is fine (already complete: nothing to redo)


def test_killed_subprocess_leaves_a_loadable_checkpoint(env, tmp_path):
    """SIGKILL a real training process at a random moment; the newest step-* directory must be complete."""
    import random
    import signal
    import subprocess
    import time

    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "r1lab", "pretrain", "--preset", "tiny", "--corpus", json.dumps([env["corpus"]]),
           "--tokenizer", env["tokenizer"], "--seq-len", "32", "--micro-batch", "4", "--steps", "400",
           "--ckpt-every", "1", "--keep-last", "1", "--exact-match", "0", "--progress", "false", "--eval-every", "0",
           "--device", "cpu", "--out-dir", str(out)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.time() + 60
    while time.time() < deadline and not any((out / "checkpoints").glob("step-*")):
        time.sleep(0.1)
    time.sleep(random.Random(0).uniform(0.2, 1.0))
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    from r1lab.model import DeepSeekV3ForCausalLM
    from r1lab.train.loop import latest_checkpoint, load_training_state

    ckpt = latest_checkpoint(out / "checkpoints")
    assert ckpt is not None
    state = load_training_state(ckpt / "training_state.pt")
    assert state["step"] == int(ckpt.name.split("-")[1])
    DeepSeekV3ForCausalLM.from_pretrained(ckpt)  # loads: every file complete


@pytest.mark.parametrize("content, expect", [
    (b"", "empty file"),
    (b'{"text": "ok"}\n{"text": "bad \xff byte"}\n', ":2: not valid UTF-8"),
    (b'{"text": "ok"}\n{"body": "no text field"}\n', ":2: missing field 'text'"),
    (b'{"text": "ok"}\n{"text": "truncated\n', ":2: invalid JSON"),
])
def test_bad_corpus_names_file_and_line(env, tmp_path, content, expect):
    from r1lab.data.stream import CorpusError

    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(content)
    with pytest.raises(CorpusError) as err:
        _run(tiny_config(env, tmp_path / "run", corpus=[str(bad)]))
    assert str(bad) in str(err.value) and expect in str(err.value)


def test_cli_reports_corpus_error(env, tmp_path, capsys):
    from r1lab.cli import main

    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(b'{"text": "ok"}\n{"txt": 1}\n')
    rc = main(["pretrain", "--corpus", json.dumps([str(bad)]), "--tokenizer", env["tokenizer"], "--preset", "tiny",
               "--out-dir", str(tmp_path / "o"), "--progress", "false"])
    err = capsys.readouterr().err
    assert rc == 2 and f"r1lab pretrain: error: {bad}:2:" in err and "Traceback" not in err


def regenerate() -> None:
    import tempfile

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as d:
        env = make_env(Path(d))
        art = _run(tiny_config(env, Path(d) / "run", steps=20))
    GOLDEN.parent.mkdir(exist_ok=True)
    GOLDEN.write_text(json.dumps({
        "how": "python3 tests/test_train_pretrain.py --regen: preset tiny, tests/train_helpers.py synthetic corpus "
               "(240 docs, seed 0) + 300-token BPE, tiny_config(steps=20): seq_len 32, micro_batch 4, lr 3e-3, "
               "warmup 4, cosine, fim 0.1, seed 0, CPU fp32, 1 thread",
        "torch": torch.__version__,
        "losses": art["losses"],
    }, indent=1) + "\n")
    print(f"wrote {GOLDEN}")


if __name__ == "__main__":
    if "--regen" in sys.argv:
        regenerate()
