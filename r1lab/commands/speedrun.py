"""Run the whole DeepSeek-R1 pipeline on the built-in data: tokenizer → pretrain → R1-Zero → R1 (cold start,
reasoning RL, rejection sampling, SFT from base, RL for all scenarios) → distillation into dense students (ours and a
Qwen2-architecture model) vs the same student trained by RL alone → evaluation → report.md, plots and results.json.

Rerunning the same command in the same --out directory resumes (finished stages are skipped, the interrupted one
continues from its last checkpoint). A run directory made with another recipe or preset is refused.
"""

from __future__ import annotations

NAME = "speedrun"
HELP = "the whole R1 pipeline end to end (resumable): --preset cpu|gpu|tiny --out DIR"


def add_arguments(p) -> None:
    from r1lab.pipeline.presets import PRESETS
    from r1lab.pipeline.recipes import preset_help, recipe_help, recipe_names

    # the recipes and what each runs, generated from the registry (r1lab/pipeline/recipes.py) so it stays true
    p.description = f"{(__doc__ or HELP).strip()}\n\nRecipes (--recipe):\n{recipe_help()}"
    p.add_argument("--preset", default="cpu", choices=sorted(PRESETS),
                   help=f"size preset (default cpu): {preset_help()}; measured times are in README")
    p.add_argument("--out", default="runs/speedrun", help="run directory (default runs/speedrun)")
    p.add_argument("--recipe", default="speedrun", choices=recipe_names(),
                   help="which pipeline to run (default speedrun = every stage); each is described above")
    p.add_argument("--smoke", action="store_true", help="same as --preset tiny")
    p.add_argument("--only", nargs="+", default=None, metavar="STAGE",
                   help="run only these stages of the recipe (their inputs must be DONE; see --list for the names)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default); on a machine "
                   "shared with other jobs use 1 (and OMP_NUM_THREADS=1): oversubscribed threads can be 10x slower")
    p.add_argument("--set", action="append", default=[], metavar="STAGE.FIELD=VALUE",
                   help="change one stage's config on top of the preset (repeatable; VALUE is JSON): "
                   "--set r1-zero.steps=60, --set kind:grpo.lr=5e-5 (every GRPO stage), "
                   "--set tokenizer.template_share=0.5; see --list for the stages and their fields")
    p.add_argument("--stop-after", type=float, default=0.0, metavar="MINUTES",
                   help="start no new stage after this many minutes (0 = run to the end); the same command again "
                   "continues, e.g. on a GPU lent in 10-minute slices")
    p.add_argument("--list", action="store_true", help="print the recipe's resolved stages and exit")
    p.add_argument("--jobs", default="auto", choices=["auto", "1", "2"],
                   help="2: the dense student's stages (student-base, rl-only-student, its eval) run in a second "
                   "process beside the teacher's R1 stages, each with half the CPU threads (~10%% faster on 2 cores); "
                   "1: one stage at a time; auto (default): 2 on a CPU with two or more threads, 1 on a GPU. Thread "
                   "counts change float rounding, so --jobs 1 and 2 give slightly different numbers")


def main(args) -> int:
    import json

    from r1lab.pipeline.recipes import parse_set, prepare
    from r1lab.pipeline.rundir import check_only
    from r1lab.pipeline.speedrun import run

    preset = "tiny" if args.smoke else args.preset
    # RecipeError / RunDirError are ValueErrors: r1lab.cli prints them as one line on stderr (exit 2)
    overrides = parse_set(args.set)
    recipe = prepare(args.recipe, preset, overrides)  # stages, fields, value types: before anything runs
    if args.list:
        for s in recipe.stages:
            print(f"{s.name:<22} {s.kind:<13} inputs={dict(s.inputs)} config={json.dumps(dict(s.config))}")
        return 0
    check_only(recipe, args.only)
    run(args.out, preset, args.recipe, args.only, args.threads, overrides, args.stop_after, args.jobs)
    return 0
