"""Recipe validation before anything runs, the run-dir state machine (DONE skip, resume, mismatch refusal) with
fake stage runners, and the results.json schema of the report."""

from __future__ import annotations

import dataclasses
import json
import re
import shutil

import pytest

from r1lab.pipeline import recipes
from r1lab.pipeline.recipes import Recipe, RecipeError, StageSpec, prepare, resolve, validate
from r1lab.pipeline.report import RESULT_KEYS, findings, write_report
from r1lab.pipeline.rundir import DONE, RunDirMismatch, run_recipe


def test_every_builtin_recipe_validates_for_every_preset():
    for name in recipes.recipe_names():
        for preset in ("tiny", "cpu", "gpu"):
            if name != "r1-zero" and not _sft_available():
                pytest.skip("r1lab.train.sft not written yet")
            r = prepare(name, preset)
            assert r.stages and len({s.name for s in r.stages}) == len(r.stages)


def _sft_available() -> bool:
    try:
        import r1lab.train.sft  # noqa: F401
    except ImportError:
        return False
    return True


def _recipe(*stages: StageSpec) -> Recipe:
    return Recipe("test", "test recipe", tuple(stages))


def test_unknown_kind_field_input_and_wired_field_are_named():
    with pytest.raises(RecipeError, match=r"stage 'x': unknown stage kind 'magic'"):
        validate(_recipe(StageSpec("x", "magic")))
    with pytest.raises(RecipeError, match=r"stage 'e': unknown field 'kk' for EvalStage"):
        validate(_recipe(StageSpec("t", "tokenizer"), StageSpec("p", "pretrain", {}, {"tokenizer": "t"}),
                         StageSpec("e", "eval", {"kk": 3}, {"model": "p"})))
    with pytest.raises(RecipeError, match=r"input 'model' names 'nowhere', which is not an earlier stage"):
        validate(_recipe(StageSpec("e", "eval", {}, {"model": "nowhere"})))
    with pytest.raises(RecipeError, match=r"field 'out_dir' is set by the pipeline"):
        validate(_recipe(StageSpec("t", "tokenizer"), StageSpec("p", "pretrain", {"out_dir": "x"},
                                                                {"tokenizer": "t"})))
    with pytest.raises(RecipeError, match="needs input 'model'"):
        validate(_recipe(StageSpec("e", "eval")))
    with pytest.raises(RecipeError, match="unknown recipe 'r2'"):
        prepare("r2", "cpu")
    with pytest.raises(RecipeError, match="unknown preset 'huge'"):
        prepare("r1-zero", "huge")


def test_validation_happens_before_any_stage_runs(tmp_path):
    calls = []
    bad = _recipe(StageSpec("t", "tokenizer"), StageSpec("e", "eval", {"nope": 1}, {"model": "t"}))
    with pytest.raises(RecipeError):
        validate(bad)
        run_recipe(bad, "tiny", tmp_path / "run", {"tokenizer": lambda ctx: calls.append(ctx.name) or {}})
    assert calls == [] and not (tmp_path / "run").exists()


def test_preset_merges_kind_then_stage_entries():
    r = resolve(recipes.get_recipe("r1-zero"), "tiny")
    grpo = r.stage("r1-zero").config
    assert grpo["steps"] == 3 and grpo["template"] == "r1-zero"  # preset kind entry + recipe field
    assert r.stage("pretrain").config["model_overrides"]["max_position_embeddings"] == 1024


class Boom(RuntimeError):
    pass


def fake_runners(log: list[str], fail_at: str | None = None):
    def make(kind):
        def run(ctx):
            log.append(ctx.name)
            ctx.out_dir.mkdir(parents=True, exist_ok=True)
            (ctx.out_dir / "progress").write_text("partial")
            if ctx.name == fail_at:
                raise Boom(ctx.name)
            inputs = {role: art.get("model_dir") for role, art in ctx.inputs.items()}
            return {"model_dir": str(ctx.out_dir / "model"), "inputs": inputs, "resume": ctx.resume,
                    "pass@1": 0.5, "cons@k": 0.75, "k": 4, "mean_response_tokens": 12.0,
                    "language_mixing_rate": 0.0}
        return run
    return {k: make(k) for k in recipes.KINDS}


def test_rundir_skips_done_resumes_failed_and_refuses_other_recipes(tmp_path):
    recipe = resolve(recipes.get_recipe("r1-zero"), "tiny")
    run_dir = tmp_path / "run"
    log: list[str] = []
    with pytest.raises(Boom):
        run_recipe(recipe, "tiny", run_dir, fake_runners(log, fail_at="r1-zero"), log=lambda s: None)
    assert log == ["tokenizer", "pretrain", "eval-base", "r1-zero"]
    assert (run_dir / "pretrain" / DONE).exists() and not (run_dir / "r1-zero" / DONE).exists()
    log.clear()
    lines: list[str] = []
    done = run_recipe(recipe, "tiny", run_dir, fake_runners(log), log=lines.append)
    assert log == ["r1-zero", "eval-r1-zero"]  # finished stages skipped, the failed one rerun
    assert any("r1-zero (grpo): resuming" in x for x in lines)
    assert done["r1-zero"]["artifacts"]["inputs"] == {"model": str(run_dir / "pretrain" / "model")}
    assert done["r1-zero"]["wall_seconds"] >= 0
    other = resolve(recipes.get_recipe("r1-zero"), "cpu")
    with pytest.raises(RunDirMismatch, match=r"preset: run dir has 'tiny', asked for 'cpu'"):
        run_recipe(other, "cpu", run_dir, fake_runners(log), log=lambda s: None)
    changed = dataclasses.replace(recipe, stages=recipe.stages[:-1])
    with pytest.raises(RunDirMismatch, match=r"stage 'eval-r1-zero': in the run dir but not asked for"):
        run_recipe(changed, "tiny", run_dir, fake_runners(log), log=lambda s: None)


def test_stop_after_starts_no_new_stage_and_a_rerun_continues(tmp_path, monkeypatch):
    """``--stop-after``: for machines lent in time slices; the stage that is running finishes, no other starts."""
    import itertools

    import r1lab.pipeline.rundir as rundir

    clock = itertools.count(0, 60)  # every time.time() call advances one minute (WallClock's thread's too)
    monkeypatch.setattr(rundir.time, "time", lambda: float(next(clock)))
    recipe = resolve(recipes.get_recipe("r1-zero"), "tiny")
    log: list[str] = []
    lines: list[str] = []
    done = run_recipe(recipe, "tiny", tmp_path / "run", fake_runners(log), log=lines.append, stop_after_s=150.0)
    assert 1 <= len(log) < 5 and list(done) == log
    assert any("stopping before" in x and "run the same command again" in x for x in lines)
    monkeypatch.undo()
    rest: list[str] = []
    done = run_recipe(recipe, "tiny", tmp_path / "run", fake_runners(rest), log=lambda s: None)
    assert log + rest == ["tokenizer", "pretrain", "eval-base", "r1-zero", "eval-r1-zero"] and len(done) == 5


def test_done_lines_estimate_the_rest_from_reference_times(tmp_path):
    """The speedrun's "about N min to go": reference seconds of the stages left × this machine's measured pace."""
    from r1lab.pipeline.presets import EXPECTED_SECONDS

    recipe = resolve(recipes.get_recipe("r1-zero"), "tiny")
    lines: list[str] = []
    run_recipe(recipe, "tiny", tmp_path / "run", fake_runners([]), log=lines.append,
               expected_s={"tokenizer": 1.0, "pretrain": 600.0, "eval-base": 60.0, "r1-zero": 600.0})
    done_lines = [x for x in lines if ": done in" in x]
    assert len(done_lines) == 5
    assert all("min to go" in x for x in done_lines[:-1]) and "to go" not in done_lines[-1]
    # a rerun counts only the stages still to do: with eval-base redone, the later stages are finished already
    shutil.rmtree(tmp_path / "run" / "eval-base")  # started afresh (a resumed stage's time is not a pace)
    lines.clear()
    run_recipe(recipe, "tiny", tmp_path / "run", fake_runners([]), log=lines.append,
               expected_s={"eval-base": 60.0, "r1-zero": 600.0, "eval-r1-zero": 60.0})
    assert [x for x in lines if ": done in" in x] == [x for x in lines if "eval-base: done in" in x]
    assert not any("to go" in x for x in lines)
    # the table names every stage of the speedrun it estimates, and nothing else
    speedrun = resolve(recipes.get_recipe("speedrun"), "cpu")
    assert set(EXPECTED_SECONDS["cpu"]) == {st.name for st in speedrun.stages}


def test_results_json_has_exactly_the_schema(tmp_path):
    recipe = resolve(recipes.get_recipe("r1-zero"), "tiny")
    run_dir = tmp_path / "run"
    run_recipe(recipe, "tiny", run_dir, fake_runners([]), log=lambda s: None)
    art = write_report(run_dir)
    results = json.loads((run_dir / "results.json").read_text())
    assert set(results) == {"preset", "stages"} and results["preset"] == "tiny"
    assert [s["name"] for s in results["stages"]] == ["base", "r1-zero"]
    for s in results["stages"]:
        assert tuple(s) == RESULT_KEYS
        assert isinstance(s["name"], str) and isinstance(s["model"], str) and isinstance(s["k"], int)
        for key in ("pass@1", "cons@k", "mean_response_tokens", "language_mixing_rate", "wall_seconds"):
            assert isinstance(s[key], float)
    assert (run_dir / "report" / "report.md").read_text().count("not measured") == 3
    assert "pretrain_loss.png" not in art["plots"]  # the fake pretrain wrote no metrics


def test_findings_verdicts():
    row = dict(model="m", k=4, mean_response_tokens=1.0, wall_seconds=1.0)
    rows = [dict(row, name="base", **{"pass@1": 0.1, "cons@k": 0.1, "language_mixing_rate": 0.3}),
            dict(row, name="r1-zero", **{"pass@1": 0.4, "cons@k": 0.5, "language_mixing_rate": 0.3}),
            dict(row, name="r1", **{"pass@1": 0.3, "cons@k": 0.2, "language_mixing_rate": 0.1})]
    verdicts = [v for _, v, _ in findings(rows)]
    assert verdicts == ["reproduced", "not reproduced", "not reproduced", "reproduced", "not measured"]
    # exactly +25 points counts (0.1 + 0.25 > 0.35 in binary floating point); a hair less does not
    edge = [dict(rows[0], **{"pass@1": 0.1}), dict(rows[1], **{"pass@1": 0.35})]
    assert findings(edge)[0][1] == "reproduced"
    assert findings([edge[0], dict(edge[1], **{"pass@1": 0.3499})])[0][1] == "not reproduced"


def _records(correct_by_problem, mixed_by_problem=None):
    """Evaluation records: one per problem, its k samples' correctness (and mixing flags)."""
    mixed_by_problem = mixed_by_problem or [[False] * len(c) for c in correct_by_problem]
    return [{"uid": f"p{i}", "correct": c, "mixed": m, "cons_correct": sum(c) * 2 > len(c)}
            for i, (c, m) in enumerate(zip(correct_by_problem, mixed_by_problem))]


def test_findings_with_records_mark_gaps_within_noise():
    """The same point estimates read "reproduced" either way; the paired SE from the records says whether the
    margin is beyond noise: 40 problems where r1 wins one more sample than r1-zero on one problem (noise) vs r1
    winning on every problem (clear)."""
    from r1lab.pipeline.significance import paired, per_problem

    row = dict(model="m", k=4, mean_response_tokens=1.0, wall_seconds=1.0, language_mixing_rate=0.0)
    zero = [[True, False, False, False] if i % 2 else [True, True, False, False] for i in range(40)]
    close = [list(c) for c in zero]
    close[0][3] = True  # one more correct sample on one problem
    clear = [[True, True, True, False] for _ in range(40)]

    def run(r1_correct):
        recs = {"r1-zero": _records(zero), "r1": _records(r1_correct)}
        rows = [dict(row, name=n, **{"pass@1": sum(map(sum, r)) / (4 * 40), "cons@k": 0.0})
                for n, r in (("r1-zero", zero), ("r1", r1_correct))]
        return {claim: (v, e) for claim, v, e in findings(rows, recs)}

    noisy = run(close)["R1 pass@1 ≥ R1-Zero pass@1"]
    assert noisy[0] == "reproduced (within noise)" and "Δ +0.006 ± 0.006 (paired SE, 40 problems)" in noisy[1]
    sure = run(clear)["R1 pass@1 ≥ R1-Zero pass@1"]
    assert sure[0] == "reproduced" and "Δ +0.375 ± 0.020" in sure[1]
    # cons@k vs pass@1 is paired within one stage; zero mixing on both sides is exact, not noise
    assert run(clear)["R1 language mixing < R1-Zero's"][0] == "not reproduced"
    d, se, n = paired(per_problem(_records(clear), "cons@k"), per_problem(_records(clear), "pass@1"))
    assert (round(d, 3), round(se, 3), n) == (0.25, 0.0, 40)
    mixing = per_problem(_records([[True, True]], [[True, False]]), "mixing")
    assert mixing == {"p0": 0.5}


def test_template_documents_use_the_full_r1_zero_template_on_train_problems_only():
    from r1lab.data.templates import R1_ZERO_TEMPLATE
    from r1lab.pipeline.stages import template_documents

    docs = template_documents(10, [1], 0.5, seed=0)
    assert 10 < len(docs) < 70  # about half of the ~70 train problems
    head = R1_ZERO_TEMPLATE.split("{question}")[0]
    assert all(d.startswith(head) and d.rstrip().endswith("</answer>") and "<think>" in d for d in docs)
    assert template_documents(10, [1], 0.5, seed=0) == docs
    mixed = template_documents(10, [1], 0.5, seed=0, worked_share=0.3)
    answer_only = [d for d in mixed if re.search(r"<think> (The answer is|答案是) [^<]+ </think>", d)]
    assert 0 < len(answer_only) < len(mixed)  # some reason step by step, most state the answer at once
    with pytest.raises(ValueError, match="template_worked_share"):
        template_documents(10, [1], 0.5, seed=0, worked_share=1.5)
    # code-switching: each worked think block of a Chinese arithmetic question gets an English-reasoned twin
    switched = template_documents(30, [1], 0.5, seed=0, worked_share=1.0, code_switch_share=1.0)
    plain = template_documents(30, [1], 0.5, seed=0, worked_share=1.0)
    twins = [d for d in switched if "等于多少？" in d and "digit by digit" in d]
    assert [d for d in switched if d not in twins] == plain
    assert len(twins) == sum("等于多少？" in d and "逐位" in d for d in plain) > 0


def test_set_overrides_apply_after_the_preset_and_are_validated():
    from r1lab.pipeline.recipes import parse_set

    over = parse_set(["kind:grpo.lr=2e-3", "r1.lr=5e-4", "tokenizer.template_share=0.5",
                      "pretrain.model_overrides={\"num_hidden_layers\": 2}"])
    stages = {s.name: s.config for s in prepare("speedrun", "cpu", over).stages}
    assert stages["r1-zero"]["lr"] == 0.002 and stages["rl-only-student"]["lr"] == 0.002  # every GRPO stage
    assert stages["r1"]["lr"] == 0.0005  # the stage entry wins over the kind entry
    assert stages["tokenizer"]["template_share"] == 0.5
    assert stages["pretrain"]["model_overrides"] == {"num_hidden_layers": 2}
    assert stages["pretrain"]["steps"] == 1100  # the preset's other fields stay
    base = {s.name: s.config for s in prepare("speedrun", "cpu").stages}
    assert base["r1-zero"]["lr"] == 1e-4  # nothing leaks into the preset table
    with pytest.raises(RecipeError, match="--set: entry 'tokenizr' names no stage of recipe 'speedrun'"):
        prepare("speedrun", "cpu", parse_set(["tokenizr.vocab_size=10"]))
    with pytest.raises(RecipeError, match="unknown field 'bogus' for TokenizerStage"):
        prepare("speedrun", "cpu", parse_set(["tokenizer.bogus=1"]))
    for bad in ("nonsense", "steps=3", ".steps=3", "r1-zero.=3"):
        with pytest.raises(RecipeError, match="expected STAGE.FIELD=VALUE"):
            parse_set([bad])


def test_set_overrides_change_the_run_record(tmp_path):
    """A run directory made without an override refuses the same command with one (never mixes artifacts)."""
    from r1lab.pipeline.recipes import parse_set
    from r1lab.pipeline.rundir import claim_run_dir

    claim_run_dir(tmp_path, prepare("r1-zero", "tiny"), "tiny")
    claim_run_dir(tmp_path, prepare("r1-zero", "tiny"), "tiny")  # same config: accepted
    with pytest.raises(RunDirMismatch, match="r1-zero"):
        claim_run_dir(tmp_path, prepare("r1-zero", "tiny", parse_set(["r1-zero.steps=5"])), "tiny")
