"""`r1lab generate` end to end on a tiny saved model + tokenizer, its file:line errors, and `r1lab chat` fed by stdin."""

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from r1lab.commands.chat import ThinkPrinter
from r1lab.data.tokenizer import load_tokenizer, train_tokenizer
from r1lab.model import DeepSeekV3Config, DeepSeekV3ForCausalLM

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("model")
    texts = ["What is 2+3? <think> 2 plus 3 is 5 </think> <answer> 5 </answer>", "User: hello. Assistant: hi"] * 40
    train_tokenizer(texts, 300, d)
    tok = load_tokenizer(d)
    torch.manual_seed(0)
    cfg = DeepSeekV3Config.from_preset("tiny").replace(vocab_size=tok.vocab_size, eos_token_id=tok.eos_id,
                                                       bos_token_id=tok.bos_id, max_position_embeddings=512)
    DeepSeekV3ForCausalLM(cfg).save_pretrained(d)
    return d


def _run(args, stdin=None, timeout=120):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "r1lab.cli", *args], input=stdin, capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT, env=env, check=False)


def test_generate_end_to_end(model_dir, tmp_path):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(json.dumps({"prompt": "What is 2+3?", "answer": "5"}) + "\n\n" +
                       json.dumps({"prompt": "hello"}) + "\n", encoding="utf-8")
    out = tmp_path / "out" / "gen.jsonl"
    res = _run(["generate", "--model", str(model_dir), "--prompts", str(prompts), "--out", str(out), "-n", "2",
                "--temperature", "0.8", "--top-p", "0.9", "--max-tokens", "12", "--template", "r1-zero",
                "--seed", "0", "--device", "cpu"])
    assert res.returncode == 0, res.stderr
    assert "tokens/s" in res.stdout
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [r["prompt"] for r in rows] == ["What is 2+3?", "hello"] and rows[0]["answer"] == "5"
    assert rows[0]["prompt_text"].endswith("User: What is 2+3?. Assistant:")
    for r in rows:
        assert len(r["completions"]) == 2 and all(isinstance(c, str) for c in r["completions"])
        assert all(f in ("stop", "length") for f in r["finish_reasons"])
        assert all(1 <= n <= 12 for n in r["num_tokens"])
    assert not (out.parent / "gen.jsonl.tmp").exists()


def test_generate_reports_file_and_line(model_dir, tmp_path):
    prompts = tmp_path / "bad.jsonl"
    prompts.write_text(json.dumps({"prompt": "ok"}) + "\n" + '{"prompt": 3}\n', encoding="utf-8")
    res = _run(["generate", "--model", str(model_dir), "--prompts", str(prompts), "--out", str(tmp_path / "o.jsonl"),
                "--device", "cpu"])
    assert res.returncode == 2 and f"{prompts}:2:" in res.stderr
    assert not (tmp_path / "o.jsonl").exists()


def test_chat_streams_and_exits(model_dir):
    res = _run(["chat", "--model", str(model_dir), "--max-tokens", "8", "--seed", "1", "--device", "cpu"],
               stdin="What is 2+3?\n/reset\nhello\n/exit\nnever read\n")
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert lines[0].startswith("r1lab chat")
    assert sum(line.startswith("[think] ") for line in lines) == 2  # R1 template opens <think>: reasoning marked
    assert "(conversation cleared)" in res.stdout


def test_generate_max_model_len_beyond_the_context_is_an_error(model_dir, tmp_path):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(json.dumps({"prompt": "hello"}) + "\n", encoding="utf-8")
    res = _run(["generate", "--model", str(model_dir), "--prompts", str(prompts), "--out", str(tmp_path / "o.jsonl"),
                "--max-model-len", "1000", "--device", "cpu"])
    assert res.returncode == 2, res.stderr
    assert "error: --max-model-len: max_model_len 1000 exceeds the model's context" in res.stderr
    assert "512" in res.stderr
    assert not (tmp_path / "o.jsonl").exists()


def test_chat_drops_an_over_long_message_and_goes_on(model_dir):
    long_message = " ".join(f"word{i} plus {i * 7}" for i in range(400))  # far past the 512-token context
    res = _run(["chat", "--model", str(model_dir), "--max-tokens", "4", "--seed", "1", "--device", "cpu"],
               stdin=f"{long_message}\nhello\n/exit\n")
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    note = [line for line in lines if line.startswith("message too long for the context: ")]
    assert len(note) == 1 and "tokens > 511 (max_model_len 512" in note[0], res.stdout
    assert sum(line.startswith("[think] ") for line in lines) == 1  # the next message was answered


def test_think_printer_separates_reasoning():
    buf = io.StringIO()
    p = ThinkPrinter(buf, color=False, thinking=True)
    for piece in ["2 plus", " 3</th", "ink>\n\nIt is", " 5."]:
        p.write(piece)
    p.end()
    assert buf.getvalue() == "[think] 2 plus 3\n[answer] It is 5.\n"  # a tag split across tokens still counts
    buf = io.StringIO()
    p = ThinkPrinter(buf, color=False, thinking=True)
    p.write("2 plus 3</think>\n\nIt is 5.")
    p.end()
    assert buf.getvalue() == "[think] 2 plus 3\n[answer] It is 5.\n"


def test_benchmark_smoke_run_on_cpu():
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    res = subprocess.run([sys.executable, "benchmarks/generate.py", "--device", "cpu", "--preset", "tiny",
                          "--batch-sizes", "1,4", "--prompt-len", "8", "--new-tokens", "8", "--peak-bw", "1e10"],
                         capture_output=True, text=True, timeout=300, cwd=ROOT, env=env, check=False)
    assert res.returncode == 0, res.stderr
    rows = [json.loads(line) for line in res.stdout.splitlines() if line.startswith("{")]
    assert [r["batch"] for r in rows] == [1, 4, 1] and rows[-1]["mode"] == "mtp_speculative"
    assert all(r["tokens_per_s"] > 0 for r in rows)
    assert rows[0]["ratio"] > 0 and 0 < rows[0]["fraction_of_bound"] and rows[0]["peer"] == "transformers.generate"


def test_mtp_speculative_benchmark_smoke(model_dir):
    """benchmarks/mtp_speculative.py on a saved model with an MTP module: greedy speculative output identical to
    plain for k = 1, 2, acceptance in [0, 1], both sampling modes reported."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    res = subprocess.run([sys.executable, "benchmarks/mtp_speculative.py", "--model", str(model_dir), "--device",
                          "cpu", "--n-prompts", "1", "--max-tokens", "12"],
                         capture_output=True, text=True, timeout=300, cwd=ROOT, env=env, check=False)
    assert res.returncode == 0, res.stderr
    rows = [json.loads(line) for line in res.stdout.splitlines() if line.startswith("{")]
    assert [(r["mode"], r["k"]) for r in rows] == [("greedy", 1), ("greedy", 2), ("T=0.6", 1), ("T=0.6", 2)]
    assert all(r["identical_to_plain"] for r in rows[:2])
    assert all(0 <= r["acceptance_rate"] <= 1 and r["tokens_per_s"] > 0 for r in rows)


def test_eval_records_and_baseline_give_the_paired_gap(model_dir, tmp_path):
    """`r1lab eval --records` then `--baseline` those records: the same model and seed on the same problems is a
    gap of exactly 0 ± 0; a bad baseline file is one clear error naming file:line, before any generation."""
    common = ["eval", "--model", str(model_dir), "--families", "arithmetic", "word", "--n-per-family", "3", "--k", "2",
              "--max-tokens", "6", "--no-greedy", "--device", "cpu"]
    recs = tmp_path / "base" / "records.jsonl"
    first = _run([*common, "--records", str(recs), "--out", str(tmp_path / "base" / "eval.json")])
    assert first.returncode == 0, first.stderr
    rows = [json.loads(line) for line in recs.read_text(encoding="utf-8").splitlines()]
    assert len(rows) == 6 and all(len(r["correct"]) == 2 for r in rows)
    again = _run([*common, "--baseline", str(recs)])
    assert again.returncode == 0, again.stderr
    assert "pass@1   Δ +0.000 ± 0.000 (paired SE, 6 problems)" in again.stdout
    bad = tmp_path / "bad.jsonl"
    bad.write_text(recs.read_text(encoding="utf-8").splitlines()[0] + "\n{oops\n", encoding="utf-8")
    res = _run([*common, "--baseline", str(bad)])
    assert res.returncode == 2 and f"{bad}:2: not JSON" in res.stdout + res.stderr
    other = tmp_path / "other.jsonl"
    other.write_text(json.dumps({**rows[0], "uid": "elsewhere"}) + "\n", encoding="utf-8")
    res = _run([*common, "--baseline", str(other), "--records", str(tmp_path / "kept.jsonl")])
    assert res.returncode == 2 and "shares no problem" in res.stdout
    assert len((tmp_path / "kept.jsonl").read_text(encoding="utf-8").splitlines()) == 6  # written before the error
