"""CPU smoke runs of the benchmark scripts in benchmarks/, so that none of them rots between GPU sessions.

Each test runs one script as a subprocess with its smallest settings and checks the JSON line(s) it prints: the keys
docs/benchmarks.md and the notes read, and values that are finite and in range (plus an invariant where the script
has one: equal losses of two implementations on the same weights, |signal| <= long-think signal, ...). Covered
elsewhere: generate.py and mtp_speculative.py (tests/test_engine_cli.py), fp8.py --smoke (tests/test_fp8_linear.py),
language_mixing.py (on a finished tiny speedrun, tests/test_pipeline_speedrun.py).
Not run: ``train_step.py --compile`` (inductor's CPU compile takes minutes) and profile_gpu.py's profiles (CUDA only;
here its imports, argparse and its no-CUDA exit).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

# the tiny saved model + tokenizer fixture of the engine CLI tests (module-scoped: built once more for this module)
from test_engine_cli import model_dir  # noqa: F401  (a pytest fixture)

ROOT = Path(__file__).resolve().parent.parent


def bench(script: str, *args: object, timeout: int = 240) -> list[dict]:
    """Run ``benchmarks/<script> ARGS`` on the CPU (one thread, any GPU hidden); the JSON lines it printed, after
    asserting exit status 0 and at least one line."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT), CUDA_VISIBLE_DEVICES="")
    res = subprocess.run([sys.executable, f"benchmarks/{script}", *map(str, args)], capture_output=True, text=True,
                         timeout=timeout, cwd=ROOT, env=env, check=False)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-4000:]
    rows = [json.loads(line) for line in res.stdout.splitlines() if line.startswith("{")]
    assert rows, res.stdout[-2000:]
    return rows


def finite_pos(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x) and x > 0


def rate(x) -> bool:
    return isinstance(x, (int, float)) and 0.0 <= x <= 1.0


def test_train_step_cpu():
    """Ours and transformers' DeepseekV3 on the same saved weights: both rows, equal losses, and the ratio line."""
    rows = bench("train_step.py", "--device", "cpu", "--preset", "tiny", "--batch", "1", "--seq", "16",
                 "--steps", "2", "--warmup", "1")
    assert [r.get("impl") for r in rows] == ["r1lab", "transformers", None]
    for r in rows[:2]:
        assert r["bench"] == "train_step" and r["device"] == "cpu" and r["preset"] == "tiny"
        assert (r["batch"], r["seq"], r["dtype"], r["compile"]) == (1, 16, "fp32", False)
        assert finite_pos(r["tokens_per_s"]) and finite_pos(r["step_s"]) and finite_pos(r["loss"])
        assert r["active_params"] > 0 and 0 < r["mfu"] < 1 and finite_pos(r["peak_tflops"])
    ours, hf, ratio = rows
    assert abs(ours["loss"] - hf["loss"]) < 0.01, (ours["loss"], hf["loss"])  # same weights, data and optimiser
    assert ratio["ratio_r1lab_over_transformers"] == pytest.approx(ours["tokens_per_s"] / hf["tokens_per_s"])


@pytest.mark.parametrize("arch", ["qwen2", "deepseek"])
def test_grpo_step_smoke(arch):
    """Our GRPO side of the TRL comparison (TRL skipped): one line, per-step times and token counts in range."""
    (line,) = bench("grpo_step.py", "--smoke", "--skip-trl", "--arch", arch, "--steps", "2", "--prompts", "2",
                    "--group", "4", "--new-tokens", "8")
    assert line["bench"] == "grpo_step" and line["arch"] == arch and line["smoke"] is True
    assert (line["prompts"], line["G"], line["max_new_tokens"]) == (2, 4, 8)
    assert line["peer"] == "missing" and "missing" in line["trl"] and "ratio_trl_over_ours" not in line
    ours = line["ours"]
    assert finite_pos(ours["s_per_step"]) and finite_pos(ours["first_step_s"])
    assert 0 < ours["mean_completion_tokens"] <= 8 and 0 < ours["generate_frac"] < 1


def test_shared_prefix(model_dir):  # noqa: F811
    """Shared-prefix rows vs padded rows on a saved r1lab checkpoint (``--model``, as the GPU runs): same log-probs
    (fp32), fewer tokens, positive timings. (HF Qwen2 under shared-prefix rows: tests/test_shared_prefix.py.)"""
    B, G, P, T = 2, 3, 16, 8
    (line,) = bench("shared_prefix.py", "--model", model_dir, "--prompts", B, "--group-size", G, "--prompt-len", P,
                    "--max-new-tokens", T, "--micro-batch", 4, "--repeats", 1)
    assert line["bench"] == "grpo_training_forward_backward" and (line["B"], line["G"]) == (B, G)
    assert line["model"] == str(model_dir) and line["max_abs_logprob_diff"] < 1e-4
    width = line["tokens_padded"] // (B * G)
    assert line["tokens_padded"] == B * G * width and P - 9 + T // 5 <= width <= P + T
    assert 0 < line["tokens_shared"] < line["tokens_padded"]
    assert finite_pos(line["padded_s"]) and finite_pos(line["shared_prefix_s"])
    assert finite_pos(line["speedup_vs_padded"])


def test_logprob_mismatch_fp32():
    """Engine (absorbed MLA, latent cache) vs trainer log-probs agree to ~1e-6 in fp32 (the docstring's claim)."""
    (line,) = bench("logprob_mismatch.py", "--layers", 2, "--dtype", "fp32", "--rows", 2, "--prompt-len", 8,
                    "--new-tokens", 8)
    assert line["bench"] == "logprob_mismatch"
    assert (line["layers"], line["dtype"], line["compile"]) == (2, "fp32", False)
    assert 0 <= line["mean_abs_diff"] <= line["max_abs_diff"] < 1e-4
    assert -math.log(2000) - 3 < line["mean_logp"] < 0  # random weights: near uniform over the 2,000-token vocab


def test_balance(tmp_path):
    """One line per run (γ = 0 baseline, then each γ) and the summary; loads max/mean in [1, E/k]."""
    rows = bench("balance.py", "--preset", "tiny", "--steps", 4, "--tail", 2, "--seq-len", 32, "--micro-batch", 2,
                 "--gamma", 0.01, "--out", tmp_path / "balance")
    *runs, summary = rows
    assert [(r["run"], r["gamma"], r["alpha"]) for r in runs] == [("no-balancing", 0.0, 0.0),
                                                                  ("gamma=0.01", 0.01, None)]
    for r in runs:
        assert r["bench"] == "balance" and r["steps"] == 4 and r["preset"] == "tiny"
        # tiny preset: 8 routed experts, top-2, so max/mean <= 8 / 2
        assert 1.0 <= r["load_max_over_mean"] <= r["load_worst_layer"] <= 4.0
        assert finite_pos(r["final_loss"])
    assert summary["summary"] == {r["run"]: r["load_max_over_mean"] for r in runs} and summary["target"] == 1.3


def test_answer_modes(model_dir):  # noqa: F811
    """Direct vs worked frames (with the R1-Zero preamble): every family, ALL = their mean (1 sample each)."""
    (line,) = bench("answer_modes.py", "--model", model_dir, "--n-per-family", 1, "--k", 1, "--preamble")
    assert line["bench"] == "answer_modes" and line["preamble"] is True and line["k"] == 1
    fams = ["arithmetic", "countdown", "equations", "word", "arithmetic_zh", "word_zh"]
    for mode in ("direct", "worked"):
        acc = line[mode]
        assert set(acc) == {*fams, "ALL"} and all(rate(v) for v in acc.values())
        assert acc["ALL"] == pytest.approx(sum(acc[f] for f in fams) / len(fams), abs=1e-3)
    assert line["worked_over_direct"] >= 0


def test_answer_modes_template(model_dir):  # noqa: F811
    """``--template``: worked/short split under the R1-Zero template, per family (7, code included) and ALL."""
    (line,) = bench("answer_modes.py", "--model", model_dir, "--n-per-family", 1, "--k", 1, "--template")
    assert line["bench"] == "answer_modes_template"
    fams = ["arithmetic", "countdown", "equations", "word", "arithmetic_zh", "word_zh", "code"]
    assert set(line) == {"bench", "model", "k", "n_per_family", *fams, "ALL"}
    for key in (*fams, "ALL"):
        v = line[key]
        assert v["n"] == (len(fams) if key == "ALL" else 1)
        assert rate(v["worked_share"]) and rate(v["acc_worked"]) and rate(v["acc_short"])
    assert line["ALL"]["worked_share"] == pytest.approx(sum(line[f]["worked_share"] for f in fams) / 7, abs=1e-3)


def test_arithmetic_context(model_dir):  # noqa: F811
    """Greedy sums in the two contexts and worked accuracy per family: rates with the asked denominators."""
    (line,) = bench("arithmetic_context.py", "--model", model_dir, "--n-sums", 2, "--n-per-family", 1,
                    "--families", "word", "arithmetic_zh")
    assert line["bench"] == "arithmetic_context"
    assert set(line) == {"bench", "model", "sum_drill", "sum_word_step", "worked_word", "worked_arithmetic_zh"}
    assert line["sum_drill"] in (0, 0.5, 1) and line["sum_word_step"] in (0, 0.5, 1)
    assert line["worked_word"] in (0, 1) and line["worked_arithmetic_zh"] in (0, 1)


def test_grpo_signal(model_dir):  # noqa: F811
    """Per-family mode signal: 0 <= long-think signal (= mean std of the worked flags) <= 0.5 and
    |accuracy signal| <= long-think signal (Cauchy-Schwarz); ALL is the mean over families."""
    fams = ["arithmetic", "word_zh", "code"]
    (line,) = bench("grpo_signal.py", "--model", model_dir, "--n-per-family", 1, "--group-size", 2,
                    "--families", *fams)
    assert line["bench"] == "grpo_signal" and line["group_size"] == 2
    assert set(line) == {"bench", "model", "group_size", "n_per_family", *fams, "ALL"}
    for f in fams:
        v = line[f]
        assert rate(v["worked_share"]) and rate(v["acc_worked"]) and rate(v["acc_short"])
        assert 0 <= v["long_think_signal"] <= 0.5 and abs(v["signal"]) <= v["long_think_signal"] + 1e-3
    a = line["ALL"]
    assert a["signal"] == pytest.approx(sum(line[f]["signal"] for f in fams) / 3, abs=1e-3)
    assert a["long_think_signal"] == pytest.approx(sum(line[f]["long_think_signal"] for f in fams) / 3, abs=1e-3)
    assert (a["ratio"] is None) == (a["long_think_signal"] == 0)


def test_r1_sft_rows(model_dir, tmp_path):  # noqa: F811
    """The rejection rows kept, topped up with worked solutions to the size, non-reasoning rows added; SFT'd and
    evaluated: one line per size."""
    run = tmp_path / "run"
    (run / "pretrain").mkdir(parents=True)
    (run / "pretrain" / "model").symlink_to(model_dir, target_is_directory=True)
    (run / "r1-reject").mkdir()
    old = [{"prompt": f"What is {i}+1?", "response": f"<think>\n{i} plus 1 is {i + 1}.\n</think>\n\nThe answer is "
            f"{i + 1}.", "style": "r1", "uid": f"u{i}", "family": "arithmetic", "lang": "en", "answer": str(i + 1),
            "source": "rejection"} for i in range(2)]
    old += [{"prompt": "hello", "response": "Hi!", "style": "r1", "source": "non-reasoning", "lang": "en"},
            {"prompt": "x", "response": "y", "style": "r1", "source": "worked"}]  # not kept: the script re-tops
    (run / "r1-reject" / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in old), encoding="utf-8")
    out = tmp_path / "out"
    (line,) = bench("r1_sft_rows.py", "--run", run, "--rows", 3, "--n-per-family", 1, "--out", out)
    assert line["bench"] == "r1_sft_rows" and line["min_rows"] == 3 and line["rl_samples"] == 2
    assert line["rows"] == 4 and line["sft_steps"] >= 1  # 2 rejection + 1 worked top-up + 1 non-reasoning
    assert rate(line["pass@1"]) and rate(line["cons@k"])
    rows = [json.loads(x) for x in (out / "rows3" / "data.jsonl").read_text(encoding="utf-8").splitlines()]
    assert sorted(r["source"] for r in rows) == ["non-reasoning", "rejection", "rejection", "worked"]


def test_passkey(tmp_path):
    """Pretrain (2 steps) + one YaRN phase (1 step): passkey accuracy of both models at every length."""
    (line,) = bench("passkey.py", "--out", tmp_path / "pk", "--preset", "tiny", "--original", 32, "--phases", 64,
                    "--phase-steps", 1, "--base-steps", 2, "--micro-batch", 2, "--n-eval", 2, "--passkey-docs", 8)
    assert line["bench"] == "passkey" and line["original"] == 32 and line["phases"] == [64]
    assert set(line["passkey"]) == {"base", "extended"}
    for acc in line["passkey"].values():
        assert set(acc) == {"32", "64"} and all(v in (0, 0.5, 1) for v in acc.values())
    assert (tmp_path / "pk" / "base" / "model" / "config.json").is_file()


def test_profile_gpu_imports_and_skips_without_cuda():
    """GPU only: here its imports (generate.build_config, train_step.PEER), its argparse choices and the no-CUDA
    line (bench() hides any GPU, so this is the no-CUDA path on a GPU machine too)."""
    assert bench("profile_gpu.py", "--what", "train", "decode", "train_compile", "fp8", "--rows", 5) == [
        {"bench": "profile_gpu", "skipped": "needs CUDA"}]


def test_cpu_sampling_arms_and_eval_split():
    """benchmarks/cpu_sampling.py: every arm (here one process at 64 slots, two at 32) samples the peer's very tokens;
    the evaluation's generation and scoring seconds add up to its total."""
    rows = bench("cpu_sampling.py", "--preset-tiny", "--arms", "1x64,2x32", "--n-per-family", 2, "--k", 2,
                 "--max-tokens", 12, "--rounds", 1, "--eval")
    arms = [r for r in rows if r["bench"] == "cpu_sampling"]
    assert [(r["workers"], r["slots"]) for r in arms] == [(1, 64), (2, 32)]
    assert all(r["same_tokens_as_peer"] and r["tokens"] > 0 and r["seconds_median"] > 0 for r in arms)
    assert all(r["compiled"] is False and r["warmup_s"] > 0 for r in arms)  # 'c' arms compile for minutes: not here
    assert arms[0]["ratio"] == 1.0
    (ev,) = [r for r in rows if r["bench"] == "cpu_sampling_eval"]
    assert ev["problems"] == 14 and 0 <= ev["pass@1"] <= 1
    assert math.isclose(ev["generate_s"] + ev["scoring_s"], ev["seconds"], abs_tol=0.02)


def test_cpu_attention_arms_agree_and_time():
    """benchmarks/cpu_attention.py: both arms (math-path SDPA, V-padded flash) give the same first loss and gradients
    on the tiny preset, and each prints its step time and ratio to the peer."""
    out = bench("cpu_attention.py", "--preset", "tiny", "--seq-lens", 64, "--rounds", 1, "--steps", 1,
                "--micro-batch", 2, "--profile")
    rows = [r for r in out if r["bench"] == "cpu_attention"]
    profiles = {r["arm"]: r["self_cpu_share"] for r in out if r["bench"] == "cpu_attention_profile"}
    assert set(profiles) == {"math (peer)", "flash, V padded"}  # which kernel runs: test_model_core's flash test
    assert all(0 < sum(p.values()) <= 1.0001 for p in profiles.values())
    assert [r["arm"] for r in rows] == ["math (peer)", "flash, V padded"]
    assert all(finite_pos(r["step_s_median"]) and r["seq_len"] == 64 for r in rows)
    assert rows[0]["ratio_speed_vs_peer"] == 1.0
    assert all(r["first_loss_diff"] < 1e-5 and r["first_grad_max_diff"] < 1e-5 for r in rows)


def test_cpu_cross_entropy_arms_agree_and_time():
    """benchmarks/cpu_cross_entropy.py: the fused head + CE and the peer (F.cross_entropy over logits) give the same
    loss and gradients, for the head alone and for a whole training step, and each arm prints its time and ratio."""
    out = bench("cpu_cross_entropy.py", "--preset", "tiny", "--rounds", 1, "--steps", 1, "--micro-batch", 2,
                "--seq-len", 64)
    heads = [r for r in out if r["bench"] == "cpu_cross_entropy_head"]
    steps = [r for r in out if r["bench"] == "cpu_cross_entropy_step"]
    assert [r["rows"] for r in heads] == [128, 128, 96, 96] and len(steps) == 2
    assert all(finite_pos(r["s_median"]) for r in heads + steps)
    assert [r["ratio_speed_vs_peer"] for r in (heads[0], heads[2], steps[0])] == [1.0, 1.0, 1.0]
    assert all(r["max_abs_diff"] < 1e-5 for r in heads)
    assert all(r["first_loss_diff"] < 1e-5 and r["first_grad_max_diff"] < 1e-5 for r in steps)


def test_cpu_vocab_times_both_models_and_arms():
    """benchmarks/cpu_vocab.py: teacher and student, the preset's vocabulary (peer) and the fitted one, each with a
    positive time and its ratio to the peer; a fitted size above the preset's is refused."""
    out = bench("cpu_vocab.py", "--preset", "tiny", "--fitted", 192, "--rounds", 1, "--steps", 1, "--micro-batch", 2,
                "--seq-len", 64)
    assert [(r["model"], r["arm"].split()[0]) for r in out] == [("teacher", "preset"), ("teacher", "fitted"),
                                                                ("student", "preset"), ("student", "fitted")]
    assert all(finite_pos(r["s_median"]) and finite_pos(r["ratio_speed_vs_peer"]) for r in out)
    assert [r["ratio_speed_vs_peer"] for r in out[::2]] == [1.0, 1.0]
    bad = subprocess.run([sys.executable, "benchmarks/cpu_vocab.py", "--preset", "tiny", "--fitted", "4096"],
                         capture_output=True, text=True, cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)),
                         timeout=120, check=False)
    assert bad.returncode != 0 and "larger than the preset's vocabulary" in bad.stderr


def test_cpu_step_fusions_arms_train_the_same_numbers():
    """benchmarks/cpu_step_fusions.py: four teacher arms (the peer first) and the student's two (no experts, so no
    combine arms), each timed with its ratio to the peer, and every arm's first-step loss and gradients bitwise equal
    to the peer's (the candidates change no number at K = 2)."""
    out = bench("cpu_step_fusions.py", "--preset", "tiny", "--vocab", 192, "--rounds", 1, "--steps", 1,
                "--micro-batch", 2, "--seq-len", 64, "--profile")
    profiles = [r for r in out if r["bench"] == "cpu_step_fusions_profile"]
    assert [r["model"] for r in profiles] == ["teacher", "student"]
    assert all(0 < sum(r["self_cpu_share"].values()) <= 1.0 + 1e-6 for r in profiles)
    out = [r for r in out if r["bench"] == "cpu_step_fusions"]
    arms = [(r["model"], r["arm"]) for r in out if "arm" in r]
    assert [m for m, _ in arms] == ["teacher"] * 4 + ["student"] * 2
    assert arms[0][1].endswith("(peer)") and arms[4][1].endswith("(peer)")
    assert all(finite_pos(r["s_median"]) and finite_pos(r["ratio_speed_vs_peer"]) for r in out if "arm" in r)
    assert all(r["same_as_peer"] is True for r in out if "arm" in r)


def test_cpu_vocab_reports_tokenizer_sizes(tmp_path):
    """benchmarks/cpu_vocab.py --corpus: per size asked, the trained tokenizer's ids (never more than asked), the
    corpus tokens and the distinct ids that occur."""
    from train_helpers import write_corpus

    corpus = write_corpus(tmp_path / "corpus.jsonl", n_docs=60)
    out = bench("cpu_vocab.py", "--preset", "tiny", "--fitted", 192, "--rounds", 1, "--steps", 1, "--micro-batch", 2,
                "--seq-len", 64, "--corpus", corpus, "--sizes", 300, 270)
    toks = [r for r in out if r["bench"] == "cpu_vocab_tokenizer"]
    assert [r["asked"] for r in toks] == [300, 270] and all(r["documents"] == 60 for r in toks)
    assert all(0 < r["ids_used"] <= r["ids"] <= r["asked"] and r["corpus_tokens"] > 0 for r in toks)


def test_rl_stage_variance_names_what_a_run_dir_lacks(tmp_path):
    """The script checks its inputs before training anything: exit 2 with what is missing (a run dir without
    run.json, a stage that is not a GRPO stage, an unfinished input stage); no arguments get the usage line. A finished
    run end to end: tests/test_pipeline_speedrun.py."""
    def script(*args):
        return subprocess.run(["bash", "benchmarks/rl_stage_variance.sh", *map(str, args)], capture_output=True,
                              text=True, cwd=ROOT, timeout=60)

    run = tmp_path / "run"
    run.mkdir()
    res = script(run, "r1", "x")
    assert res.returncode == 2 and f"{run}/run.json not found" in res.stderr, res.stderr
    stages = [{"name": "pretrain", "kind": "pretrain", "inputs": {}, "config": {}},
              {"name": "eval-base", "kind": "eval", "inputs": {"model": "pretrain"}, "config": {"k": 4}},
              {"name": "r1-zero", "kind": "grpo", "inputs": {"model": "pretrain"}, "config": {"steps": 2}},
              {"name": "eval-r1-zero", "kind": "eval", "inputs": {"model": "r1-zero"}, "config": {"k": 4}}]
    (run / "run.json").write_text(json.dumps({"stages": stages}))
    res = script(run, "eval-base", "x")
    assert res.returncode == 2 and "no GRPO stage 'eval-base' (its GRPO stages: r1-zero)" in res.stderr, res.stderr
    res = script(run, "r1-zero", "x")
    assert res.returncode == 2 and "eval-base/records.jsonl not found: stage 'eval-base' did not finish" in res.stderr
    (run / "eval-base").mkdir()
    (run / "eval-base" / "records.jsonl").write_text("")
    res = script(run, "r1-zero", "x")
    assert res.returncode == 2 and f"{run}/pretrain/DONE not found" in res.stderr, res.stderr
    assert not (run / "rl_stage_variance").exists()
    # a starting model that is not a model: r1lab grpo fails and the script shows the end of its log
    (run / "pretrain").mkdir()
    (run / "pretrain" / "DONE").write_text(json.dumps({"artifacts": {"model_dir": str(run / "nothing")}}))
    res = script(run, "r1-zero", "x")
    assert res.returncode == 1 and "r1lab grpo failed; the end of" in res.stderr and "nothing" in res.stderr, res.stderr
    res = script()
    assert res.returncode != 0 and "usage: rl_stage_variance.sh RUN_DIR STAGE NAME" in res.stderr


def test_cpu_lanes_times_both_arms():
    """benchmarks/cpu_lanes.py: the peer (one process at a time) and the side-by-side arm, each with its seconds, each
    process's own seconds and the ratio to the peer; fewer than two threads is refused."""
    out = bench("cpu_lanes.py", "--threads", 2, "--preset", "tiny", "--vocab", 192, "--steps", 1, "--rounds", 1,
                "--micro-batch", 2, "--seq-len", 64)
    assert [r["arm"] for r in out] == ["one at a time (peer)", "side by side"]
    assert all(finite_pos(r["s_median"]) and finite_pos(r["ratio_speed_vs_peer"]) for r in out)
    assert out[0]["ratio_speed_vs_peer"] == 1.0
    assert all(finite_pos(x) for r in out for x in r["teacher_s"] + r["student_s"])
    # side by side, the run lasts at least as long as its slower process
    assert out[1]["s_median"] >= max(out[1]["teacher_s"][0], out[1]["student_s"][0]) - 1e-3
    bad = subprocess.run([sys.executable, "benchmarks/cpu_lanes.py", "--threads", "1"], capture_output=True,
                         text=True, cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)), timeout=120, check=False)
    assert bad.returncode != 0 and "at least 2" in bad.stderr
