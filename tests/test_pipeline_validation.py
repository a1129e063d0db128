"""`r1lab speedrun` refuses bad input before anything runs or run.json is written: --set / preset values of the
wrong type, --only names that are not stages of the recipe, --set entries that miss the chosen recipe. The report
reads metric logs tolerantly (torn last line, steps repeated by a resume) and names a corrupt run.json. The --help
text is generated from the recipe registry."""

from __future__ import annotations

import argparse
import json
import re

import pytest

from r1lab.pipeline import recipes
from r1lab.pipeline.recipes import RecipeError, parse_set, prepare, resolve
from r1lab.pipeline.rundir import RunDirError, claim_run_dir, run_recipe


def fake_runners(log: list[str]):
    """Runners for every kind that record the stage name and return eval-shaped artifacts."""
    def run(ctx):
        log.append(ctx.name)
        ctx.out_dir.mkdir(parents=True, exist_ok=True)
        return {"model_dir": str(ctx.out_dir / "model"), "pass@1": 0.5, "cons@k": 0.75, "k": 4,
                "mean_response_tokens": 12.0, "language_mixing_rate": 0.0}
    return {kind: run for kind in recipes.KINDS}


def speedrun_cli(monkeypatch, *argv: str) -> int:
    """``r1lab speedrun --smoke ARGV...`` in this process (no stage may start: the tests pass bad input)."""
    from r1lab import cli

    monkeypatch.setenv("R1LAB_WORKERS", "1")  # cli.main sets a default; keep it out of the other tests
    return cli.main(["speedrun", "--smoke", *argv])


# ------------------------------------------------------------------------------------------------ 1. value types
@pytest.mark.parametrize("item, message", [
    ('pretrain.steps="abc"', r"recipe 'r1-zero', stage 'pretrain': field 'steps': expected int, got 'abc' \(str\)"),
    ("pretrain.steps=abc", r"stage 'pretrain': field 'steps': expected int, got 'abc'"),  # a bare word stays a str
    ("pretrain.steps=1e3", r"field 'steps': expected int, got 1000.0 \(float\) \(write 1000, not 1000.0\)"),
    ("eval-base.k=true", r"stage 'eval-base': field 'k': expected int, got True \(bool\)"),
    ("r1-zero.lr=[1]", r"stage 'r1-zero': field 'lr': expected float, got \[1\] \(list\)"),
    ('kind:grpo.families="arithmetic"', r"field 'families': expected list\[str\], got 'arithmetic'"),
    ('r1-zero.reward_weights={"accuracy": "high"}', r"field 'reward_weights'\['accuracy'\]: expected float, got 'high'"),
])
def test_set_values_of_the_wrong_type_name_stage_field_value_and_type(item, message):
    with pytest.raises(RecipeError, match=message):
        prepare("r1-zero", "tiny", parse_set([item]))


def test_set_values_of_the_right_type_pass():
    over = parse_set(["pretrain.lr=1", "pretrain.mtp_weight=null", "eval-base.families=null",
                      'r1-zero.families=["word"]', "pretrain.betas=[0.9, 0.95]"])
    stages = {s.name: s.config for s in prepare("r1-zero", "tiny", over).stages}
    assert stages["pretrain"]["lr"] == 1 and stages["pretrain"]["mtp_weight"] is None  # an int is a float
    assert stages["eval-base"]["families"] is None and stages["r1-zero"]["families"] == ["word"]


def test_preset_values_are_type_checked_too(monkeypatch):
    from r1lab.pipeline.presets import PRESETS

    bad = {**PRESETS["tiny"], "kind:eval": {**PRESETS["tiny"]["kind:eval"], "k": "2"}}
    monkeypatch.setitem(PRESETS, "tiny", bad)
    with pytest.raises(RecipeError, match=r"stage 'eval-base': field 'k': expected int, got '2' \(str\)"):
        prepare("r1-zero", "tiny")


def test_speedrun_with_a_bad_set_value_fails_before_run_json(tmp_path, monkeypatch, capsys):
    """The bug: the run started, died mid-run with a TypeError, and its run.json then refused the corrected rerun."""
    out = tmp_path / "run"
    assert speedrun_cli(monkeypatch, "--recipe", "r1-zero", "--out", str(out), "--set", 'pretrain.steps="abc"') == 2
    err = capsys.readouterr().err
    assert "r1lab speedrun: error:" in err and "field 'steps': expected int, got 'abc'" in err
    assert not out.exists()
    claim_run_dir(out, prepare("r1-zero", "tiny", parse_set(["pretrain.steps=5"])), "tiny")  # the corrected run


# ------------------------------------------------------------------------------------------------ 2. --only
def test_only_with_an_unknown_stage_is_an_error_before_run_json(tmp_path):
    recipe = resolve(recipes.get_recipe("r1-zero"), "tiny")
    log: list[str] = []
    with pytest.raises(RecipeError, match=r"--only: 'bogus' is not a stage of recipe 'r1-zero'; its stages: "
                                          r"tokenizer, pretrain, eval-base, r1-zero, eval-r1-zero"):
        run_recipe(recipe, "tiny", tmp_path / "run", fake_runners(log), log=lambda s: None, only=["bogus"])
    with pytest.raises(RecipeError, match=r"'r1', 'nope' are not a stage of recipe 'r1-zero'"):
        run_recipe(recipe, "tiny", tmp_path / "run", fake_runners(log), log=lambda s: None,
                   only=["tokenizer", "r1", "nope"])
    with pytest.raises(RecipeError, match="--only needs at least one stage name"):
        run_recipe(recipe, "tiny", tmp_path / "run", fake_runners(log), log=lambda s: None, only=[])
    assert log == [] and not (tmp_path / "run").exists()
    run_recipe(recipe, "tiny", tmp_path / "run", fake_runners(log), log=lambda s: None, only=["tokenizer"])
    assert log == ["tokenizer"]


def test_speedrun_only_bogus_exits_2_without_run_json(tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    assert speedrun_cli(monkeypatch, "--recipe", "r1-zero", "--out", str(out), "--only", "bogus") == 2
    printed = capsys.readouterr().err
    assert "'bogus' is not a stage of recipe 'r1-zero'" in printed and "eval-r1-zero" in printed
    assert not out.exists()


# ------------------------------------------------------------------------------------------------ 3. --set targets
def test_set_entries_must_hit_a_stage_of_the_chosen_recipe():
    with pytest.raises(RecipeError, match=r"--set: entry 'r1' names no stage of recipe 'r1-zero' \('r1' is a stage "
                                          r"of recipe r1, distill, speedrun\); its stages: tokenizer, pretrain"):
        prepare("r1-zero", "tiny", parse_set(["r1.lr=1e-3"]))
    with pytest.raises(RecipeError, match=r"--set: entry 'kind:sft' matches no stage of recipe 'r1-zero'; its "
                                          r"kinds: eval, grpo, pretrain, tokenizer"):
        prepare("r1-zero", "tiny", parse_set(["kind:sft.lr=1e-3"]))
    with pytest.raises(RecipeError, match=r"--set: entry 'kind:magic' names no known kind"):
        prepare("r1-zero", "tiny", parse_set(["kind:magic.lr=1e-3"]))
    assert prepare("r1", "tiny", parse_set(["r1.lr=1e-3"])).stage("r1").config["lr"] == 1e-3
    assert prepare("r1-zero", "cpu").stages  # the shared preset's entries for other recipes' stages stay fine


# ------------------------------------------------------------------------------------------------ 4. the report
def _finished_run(tmp_path):
    recipe = resolve(recipes.get_recipe("r1-zero"), "tiny")
    run_dir = tmp_path / "run"
    run_recipe(recipe, "tiny", run_dir, fake_runners([]), log=lambda s: None)
    return run_dir


def test_report_skips_a_torn_metrics_line_and_plots_the_last_row_of_each_step(tmp_path, monkeypatch):
    from r1lab.pipeline import report

    run_dir = _finished_run(tmp_path)
    rows = [{"step": s, "loss": 5.0 - s} for s in (1, 2, 3, 4)]  # killed after step 4, resumed from step 2
    rows += [{"step": s, "loss": 10.0 + s} for s in (3, 4, 5)]
    text = "".join(json.dumps(r) + "\n" for r in rows) + '{"step": 6, "lo'  # killed mid-write
    (run_dir / "pretrain" / "metrics.jsonl").write_text(text)
    (run_dir / "r1-zero" / "metrics.jsonl").write_text('{"step": 1, "reward": 0.5}\n{"step": 1, "rew')
    plotted: dict[str, list] = {}

    def capture(path, title, series, xlabel, ncols=1):
        plotted[title] = series
        return None

    monkeypatch.setattr(report, "_plot_series", capture)
    report.write_report(run_dir)
    loss = next(s for s in plotted["pretraining loss"] if s[0] == "loss")
    assert loss[1:] == ([1, 2, 3, 4, 5], [4.0, 3.0, 13.0, 14.0, 15.0])
    reward = next(s for s in plotted["RL stage r1-zero"] if s[0] == "reward")
    assert reward[1:] == ([1], [0.5])


def test_corrupt_run_json_is_named(tmp_path, monkeypatch, capsys):
    from r1lab import cli
    from r1lab.pipeline.report import write_report

    run_dir = _finished_run(tmp_path)
    path = run_dir / "run.json"
    path.write_text('{"recipe": "r1-zero", "preset": "ti')
    with pytest.raises(RunDirError, match=re.escape(str(path)) + r": not valid JSON \(line 1"):
        write_report(run_dir)
    with pytest.raises(RunDirError, match=re.escape(str(path)) + ": not valid JSON"):
        claim_run_dir(run_dir, resolve(recipes.get_recipe("r1-zero"), "tiny"), "tiny")
    monkeypatch.setenv("R1LAB_WORKERS", "1")
    assert cli.main(["report", str(run_dir)]) == 2
    assert f"{path}: not valid JSON" in capsys.readouterr().err
    path.write_text('{"recipe": "r1-zero"}')
    with pytest.raises(RunDirError, match=re.escape(str(path)) + ": missing preset, config_hash, stages"):
        write_report(run_dir)
    assert cli.main(["report", str(tmp_path / "nowhere")]) == 2
    assert "run.json not found" in capsys.readouterr().err
    assert speedrun_cli(monkeypatch, "--recipe", "r1-zero", "--out", str(run_dir)) == 2  # refused, not a traceback
    assert f"{path}: missing preset" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------ 5. --help
def _speedrun_help() -> str:
    from r1lab.cli import build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return " ".join(sub.choices["speedrun"].format_help().split())


def test_speedrun_help_describes_every_recipe_and_preset_from_the_registry(monkeypatch):
    from r1lab.pipeline.presets import PRESETS

    text = _speedrun_help()
    for recipe in recipes.RECIPES.values():
        assert f"{recipe.name}: {' '.join(recipe.description.split())}" in text
        assert f"runs {len(recipe.stages)} stages" in text and recipe.stages[-1].name in text
    assert set(recipes.PRESET_PURPOSE) == set(PRESETS)
    for name, purpose in recipes.PRESET_PURPOSE.items():
        assert f"{name} = {purpose}" in text
    assert not re.search(r"\d+\s*min", text.split("--preset {")[-1].split("--out")[0])  # no time figures
    # generated, not written out: a new recipe shows up by itself
    extra = recipes.Recipe("mini", "just the tokenizer", (recipes.StageSpec("tokenizer", "tokenizer"),))
    monkeypatch.setitem(recipes.RECIPES, "mini", extra)
    assert "mini: just the tokenizer. runs 1 stage: tokenizer" in " ".join(recipes.recipe_help().split())
