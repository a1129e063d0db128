"""The base-model exact-match probe: the engine path and the plain greedy loop agree; answers are extracted and
checked per family."""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from train_helpers import make_env, tiny_config

from r1lab.train.quick_eval import (
    exact_match_table,
    final_answer,
    generate_greedy,
    greedy_generate,
    prompt_prefix,
)


def test_engine_and_plain_greedy_agree_and_table_runs(tmp_path):
    torch.set_num_threads(1)
    env = make_env(tmp_path / "env")
    from r1lab.data.tokenizer import load_tokenizer
    from r1lab.train.pretrain import run_pretrain

    art = run_pretrain(tiny_config(env, tmp_path / "run", steps=15))
    from r1lab.model import DeepSeekV3ForCausalLM

    model = DeepSeekV3ForCausalLM.from_pretrained(art["model_dir"])
    tok = load_tokenizer(art["model_dir"])
    prompts = [tok.encode(t, add_bos=True) for t in ("3 plus 4 is", "The number after 12", "Half of 8 is 4. 9")]
    plain = greedy_generate(model, prompts, 6, tok.eos_id, tok.pad_id)
    fast = generate_greedy(model, tok, prompts, 6, "cpu")
    assert fast == plain and all(len(x) <= 6 for x in plain)
    table = exact_match_table(model, tok, 1, "cpu", log=lambda *a: None)
    assert set(table) == {"direct", "worked"}
    assert all(0.0 <= v <= 1.0 for mode in table.values() for v in mode.values()) and "all" in table["direct"]


def test_prompt_prefix_and_final_answer():
    from r1lab.tasks import make_split

    zh = next(p for p in make_split("val", 1, families=["arithmetic_zh"]))
    assert prompt_prefix(zh, "worked").endswith("解答：")
    assert final_answer("Wait, let me verify. The answer is 12. The answer is 13.") == "13"
    assert final_answer("所以 5。答案是 -7。") == "-7"
