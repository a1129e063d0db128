"""Recipes: the DeepSeek-R1 training pipelines as a registry of stages with their configs, and presets that size them.

Idea (arXiv 2501.12948): R1-Zero (§2.2) = base model → GRPO with rule rewards. R1 (§2.3) = cold-start SFT →
reasoning-oriented RL with a language-consistency reward → rejection sampling + non-reasoning data → SFT starting
again from the *base* model → RL for all scenarios with rule + model rewards. Distillation (§2.4) = SFT of dense
students on the teacher's samples, compared (§4.1) with the same student trained by RL alone.

A recipe is an ordered tuple of ``StageSpec`` (name = its folder in the run directory, kind = what runs it, config =
fields of the kind's config dataclass, inputs = role → earlier stage). ``resolve(recipe, preset)`` merges
preset overrides (per kind ``"kind:grpo"`` and per stage name) into the configs; ``validate`` checks every kind,
field (name and value type) and input *before anything runs* and raises ``RecipeError`` naming the stage and the
field. Fields a stage wires itself (out_dir, model_dir, tokenizer, resume, ...) may not be set by a recipe.

Presets (``PRESET_PURPOSE``; their tables live in ``r1lab.pipeline.presets``, measured times in README): ``tiny``
(tests: every stage for a handful of steps), ``cpu`` (the speedrun on a 2-core CPU), ``gpu`` (a larger model with
wall-clock budgets, for one GPU).
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import json
import textwrap
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from r1lab.config_cli import OverrideError, check_value


class RecipeError(ValueError):
    """A recipe or preset that cannot run; the message names the recipe, stage and field."""


@dataclass(frozen=True)
class StageSpec:
    """One stage: its run-dir folder name, its kind, its config fields and its inputs (role → earlier stage)."""

    name: str
    kind: str
    config: Mapping[str, Any] = field(default_factory=dict)
    inputs: Mapping[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "config": dict(self.config), "inputs": dict(self.inputs)}


@dataclass(frozen=True)
class Kind:
    """A kind of stage: where its config dataclass lives, which input roles it takes (required / optional) and the
    config fields it wires itself."""

    config: str  # "module:Class"
    required: tuple[str, ...] = ()
    optional: tuple[str, ...] = ()
    wired: tuple[str, ...] = ()

    def config_cls(self) -> type:
        module, _, name = self.config.partition(":")
        return getattr(importlib.import_module(module), name)


_TRAIN_WIRED = ("out_dir", "model_dir", "tokenizer", "resume", "progress")
KINDS: dict[str, Kind] = {
    "tokenizer": Kind("r1lab.pipeline.stages:TokenizerStage"),
    "pretrain": Kind("r1lab.train.pretrain:PretrainConfig", required=("tokenizer",), optional=("model",),
                     wired=(*_TRAIN_WIRED, "corpus")),
    "sft": Kind("r1lab.train.sft:SFTConfig", required=("model", "data"),
                wired=("out_dir", "model", "tokenizer", "resume", "data")),
    "grpo": Kind("r1lab.rl.grpo:GRPOConfig", required=("model",), optional=("reward_model",),
                 wired=("out_dir", "model", "tokenizer", "resume")),
    "eval": Kind("r1lab.pipeline.stages:EvalStage", required=("model",)),
    "cold_start": Kind("r1lab.pipeline.stages:ColdStartStage", required=("model",)),
    "reject": Kind("r1lab.pipeline.stages:RejectStage", required=("model",)),
    "reward_model": Kind("r1lab.pipeline.reward_model:RewardModelStage", required=("model", "data")),
    "hf_model": Kind("r1lab.pipeline.stages:HFModelStage", required=("tokenizer",)),
    "report": Kind("r1lab.pipeline.stages:ReportStage"),
}


@dataclass(frozen=True)
class SideLane:
    """Stages that may run in a second process beside the rest (``r1lab.pipeline.lanes``): they start once ``after``
    is done, and the main lane waits for them before ``join``. Their inputs must be done by ``after`` or come from the
    lane itself, and no main-lane stage before ``join`` may read them (``validate`` checks)."""

    stages: tuple[str, ...]
    after: str
    join: str


@dataclass(frozen=True)
class Recipe:
    name: str
    description: str
    stages: tuple[StageSpec, ...]
    side: SideLane | None = None
    """Stages a second process may run (``r1lab speedrun --jobs 2``); None = one stage at a time."""

    def stage(self, name: str) -> StageSpec:
        for s in self.stages:
            if s.name == name:
                return s
        raise KeyError(name)


# ------------------------------------------------------------------------------------------------ the recipes
S = StageSpec
MODEL_REWARD = "r1lab.pipeline.reward_model:model_reward"  # GRPO user reward; reads the RM dir from the environment
ALL_FAMILIES = ["arithmetic", "countdown", "equations", "word", "arithmetic_zh", "word_zh"]
ZERO_REWARDS = {"reward_weights": {"accuracy": 1.0, "format": 0.2}, "template": "r1-zero"}
BASE = (
    S("tokenizer", "tokenizer"),
    S("pretrain", "pretrain", {}, {"tokenizer": "tokenizer"}),
    S("eval-base", "eval", {"template": "r1-zero"}, {"model": "pretrain"}),
)
R1_ZERO = (
    S("r1-zero", "grpo", dict(ZERO_REWARDS), {"model": "pretrain"}),
    S("eval-r1-zero", "eval", {"template": "r1-zero"}, {"model": "r1-zero"}),
)
R1 = (
    S("cold-start-data", "cold_start", {}, {"model": "r1-zero"}),
    S("r1-cold-sft", "sft", {}, {"model": "pretrain", "data": "cold-start-data"}),
    S("eval-r1-cold-sft", "eval", {"template": "r1"}, {"model": "r1-cold-sft"}),
    S("r1-reasoning-rl", "grpo", {"reward_weights": {"accuracy": 1.0, "format": 0.2, "language": 0.2},
                                  "template": "r1"}, {"model": "r1-cold-sft"}),
    S("eval-r1-reasoning-rl", "eval", {"template": "r1"}, {"model": "r1-reasoning-rl"}),
    S("r1-reject", "reject", {"template": "r1", "non_reasoning": True}, {"model": "r1-reasoning-rl"}),
    S("r1-sft", "sft", {}, {"model": "pretrain", "data": "r1-reject"}),  # from the BASE model (§2.3.3)
    S("eval-r1-sft", "eval", {"template": "r1"}, {"model": "r1-sft"}),
    S("reward-model", "reward_model", {}, {"model": "pretrain", "data": "r1-reject"}),
    S("r1", "grpo", {"reward_weights": {"accuracy": 1.0, "format": 0.2, "language": 0.2, MODEL_REWARD: 0.2},
                     "template": "r1"}, {"model": "r1-sft", "reward_model": "reward-model"}),
    S("eval-r1", "eval", {"template": "r1"}, {"model": "r1"}),
)
# The dense student's own line (its pretraining, RL alone, evaluation) needs only the tokenizer: a second process
# runs it beside the teacher's R1 stages (``--jobs 2``), from the teacher's pretraining to the teacher's samples.
STUDENT_LANE = SideLane(("student-base", "rl-only-student", "eval-rl-only-student"), after="pretrain",
                        join="distill-data")
DISTILL = (
    S("distill-data", "reject", {"template": "r1", "non_reasoning": False}, {"model": "r1"}),
    S("student-base", "pretrain", {"model_overrides": {"n_routed_experts": 0, "num_nextn_predict_layers": 0}},
      {"tokenizer": "tokenizer"}),  # a dense student (no routed experts, no MTP), same data as the base
    S("distill-student", "sft", {}, {"model": "student-base", "data": "distill-data"}),
    S("eval-distill-student", "eval", {"template": "r1"}, {"model": "distill-student"}),
    S("rl-only-student", "grpo", dict(ZERO_REWARDS), {"model": "student-base"}),
    S("eval-rl-only-student", "eval", {"template": "r1-zero"}, {"model": "rl-only-student"}),
    S("qwen2-student", "hf_model", {"architecture": "qwen2"}, {"tokenizer": "tokenizer"}),
    S("distill-qwen2", "sft", {}, {"model": "qwen2-student", "data": "distill-data"}),
    S("eval-distill-qwen2", "eval", {"template": "r1"}, {"model": "distill-qwen2"}),
)
REPORT = (S("report", "report"),)

RECIPES: dict[str, Recipe] = {
    "r1-zero": Recipe("r1-zero", "tokenizer → pretraining (the base) → GRPO with rule rewards (accuracy + format), "
                      "each model evaluated", BASE + R1_ZERO),
    "r1": Recipe("r1", "cold-start SFT → reasoning RL → rejection sampling → SFT from base → RL all scenarios",
                 BASE + R1_ZERO + R1),
    "distill": Recipe("distill", "R1 teacher samples → SFT of dense students (ours and Qwen2), vs RL alone",
                      BASE + R1_ZERO + R1 + DISTILL, STUDENT_LANE),
    "speedrun": Recipe("speedrun", "every stage: base, R1-Zero, R1, distillation, evaluation and the report",
                       BASE + R1_ZERO + R1 + DISTILL + REPORT, STUDENT_LANE),
}

# Eval stage name → results.json stage name, in the report's row order: each R1 stage is measured on its own (the
# issue's "table by stage"), "r1" is the recipe's final model.
REPORTED = {"eval-base": "base", "eval-r1-zero": "r1-zero", "eval-r1-cold-sft": "r1-cold-start-sft",
            "eval-r1-reasoning-rl": "r1-reasoning-rl", "eval-r1-sft": "r1-rejection-sft", "eval-r1": "r1",
            "eval-distill-student": "distill-student", "eval-rl-only-student": "rl-only-student",
            "eval-distill-qwen2": "distill-qwen2"}


# What each size preset is for (``r1lab speedrun --help``; measured times are in README, not here).
PRESET_PURPOSE = {
    "tiny": "every stage for a handful of steps on a toy model: tests and smoke runs, not meaningful numbers",
    "cpu": "the speedrun on a laptop-class CPU (sized for 2 cores): a small MoE model, every stage short",
    "gpu": "one GPU: a larger model, pretraining and GRPO stages sized by wall-clock budgets (max_minutes)",
}


def recipe_names() -> list[str]:
    return sorted(RECIPES)


def recipe_help(width: int = 116) -> str:
    """One paragraph per recipe, generated from ``RECIPES``: its description and the stages it runs (a recipe
    that starts with another's stages is written as that recipe + its extra stages), smallest recipe first."""
    ordered = sorted(RECIPES.values(), key=lambda r: len(r.stages))
    lines = []
    for recipe in ordered:
        names = [s.name for s in recipe.stages]
        base = next((r for r in reversed(ordered) if len(r.stages) < len(names)
                     and names[:len(r.stages)] == [s.name for s in r.stages]), None)
        runs = (f"{base.name}'s {len(base.stages)} stages + {', '.join(names[len(base.stages):])}" if base
                else ", ".join(names))
        plural = "s" if len(names) != 1 else ""
        lines += [_wrap(f"{recipe.name}: {recipe.description}.", width, 2),
                  _wrap(f"runs {len(names)} stage{plural}: {runs}", width, 4)]
    return "\n".join(lines)


def _wrap(text: str, width: int, indent: int) -> str:
    """``text`` wrapped to ``width`` at ``indent`` spaces, continuation lines two further in; stage names with
    hyphens stay whole."""
    return textwrap.fill(text, width, initial_indent=" " * indent, subsequent_indent=" " * (indent + 2),
                         break_on_hyphens=False)


def preset_help() -> str:
    """One line per preset: its name and what it is for (``PRESET_PURPOSE``)."""
    from r1lab.pipeline.presets import PRESETS

    return "; ".join(f"{name} = {PRESET_PURPOSE.get(name, 'no description')}" for name in sorted(PRESETS))


def get_recipe(name: str) -> Recipe:
    try:
        return RECIPES[name]
    except KeyError:
        raise RecipeError(f"unknown recipe {name!r}; known: {', '.join(recipe_names())}") from None


# ------------------------------------------------------------------------------------------------ resolution
def _merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, Mapping) and isinstance(out.get(k), Mapping) else v
    return out


def resolve(recipe: Recipe, preset: str, overrides: Mapping[str, Mapping[str, Any]] | None = None) -> Recipe:
    """The recipe with the preset's overrides merged in: ``"kind:<kind>"`` entries, then ``"<stage name>"`` ones;
    then the user's ``overrides`` (same keys, e.g. from ``r1lab speedrun --set``), kind entries before stage ones.

    A preset or override entry naming a stage or kind the registry does not know is an error (it would silently do
    nothing).
    """
    from r1lab.pipeline.presets import PRESETS

    if preset not in PRESETS:
        raise RecipeError(f"unknown preset {preset!r}; known: {', '.join(sorted(PRESETS))}")
    table = PRESETS[preset]
    user = dict(overrides or {})
    all_names = {s.name for r in RECIPES.values() for s in r.stages}
    for key in table:  # a preset serves every recipe: its entries need only exist in one
        known = key.removeprefix("kind:") in KINDS if key.startswith("kind:") else key in all_names
        if not known:
            raise RecipeError(f"preset {preset!r}: entry {key!r} names no known stage or kind")
    for key in user:
        check_set_target(recipe, key)
    stages = []
    for s in recipe.stages:
        cfg = _merge(table.get(f"kind:{s.kind}", {}), s.config)
        for layer in (table.get(s.name, {}), user.get(f"kind:{s.kind}", {}), user.get(s.name, {})):
            cfg = _merge(cfg, layer)
        stages.append(dataclasses.replace(s, config=cfg))
    return dataclasses.replace(recipe, stages=tuple(stages))


def check_set_target(recipe: Recipe, key: str) -> None:
    """A ``--set`` entry's target (a stage name or ``kind:<kind>``) must hit a stage of ``recipe`` itself: one that
    names only another recipe's stage would silently do nothing. Raises RecipeError naming the entry and the
    recipe's stages (or kinds)."""
    if key.startswith("kind:"):
        kind = key.removeprefix("kind:")
        kinds = sorted({s.kind for s in recipe.stages})
        if kind not in KINDS:
            raise RecipeError(f"--set: entry {key!r} names no known kind; known: {', '.join(sorted(KINDS))}")
        if kind not in kinds:
            raise RecipeError(f"--set: entry {key!r} matches no stage of recipe {recipe.name!r}; its kinds: "
                              f"{', '.join(kinds)}")
        return
    names = [s.name for s in recipe.stages]
    if key not in names:
        owners = [r.name for r in RECIPES.values() if key in {s.name for s in r.stages}]
        elsewhere = f" ({key!r} is a stage of recipe {', '.join(owners)})" if owners else ""
        raise RecipeError(f"--set: entry {key!r} names no stage of recipe {recipe.name!r}{elsewhere}; its stages: "
                          f"{', '.join(names)}")


def parse_set(items: list[str] | None) -> dict[str, dict[str, Any]]:
    """``["STAGE.FIELD=VALUE", ...]`` → ``{STAGE: {FIELD: VALUE}}``; STAGE is a stage name or ``kind:<kind>``,
    VALUE is JSON (a bare word that is not JSON stays a string).

    >>> parse_set(["r1-zero.steps=60", "kind:grpo.lr=2e-3", "pretrain.preset=tiny", "r1-zero.lr=1e-3"])
    {'r1-zero': {'steps': 60, 'lr': 0.001}, 'kind:grpo': {'lr': 0.002}, 'pretrain': {'preset': 'tiny'}}
    """
    import json

    out: dict[str, dict[str, Any]] = {}
    for item in items or []:
        target, eq, raw = item.partition("=")
        stage, dot, name = target.rpartition(".")
        if not eq or not dot or not stage or not name:
            raise RecipeError(f"--set {item!r}: expected STAGE.FIELD=VALUE, e.g. r1-zero.steps=60 or kind:grpo.lr=5e-5")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        out.setdefault(stage, {})[name] = value
    return out


def validate(recipe: Recipe) -> None:
    """Every stage's kind exists and is importable, every config field exists and is not wired, every input names
    an earlier stage; stage names are unique. Raises RecipeError naming the first problem."""
    seen: set[str] = set()
    for s in recipe.stages:
        where = f"recipe {recipe.name!r}, stage {s.name!r}"
        if s.name in seen:
            raise RecipeError(f"{where}: duplicate stage name")
        if s.kind not in KINDS:
            raise RecipeError(f"{where}: unknown stage kind {s.kind!r}; known: {', '.join(sorted(KINDS))}")
        kind = KINDS[s.kind]
        try:
            cls = kind.config_cls()
        except (ImportError, AttributeError) as err:
            raise RecipeError(f"{where}: kind {s.kind!r} needs {kind.config}, which is not available ({err})") from None
        names = {f.name for f in dataclasses.fields(cls)}
        for key in s.config:
            if key not in names:
                raise RecipeError(f"{where}: unknown field {key!r} for {cls.__name__}; valid: {', '.join(sorted(names))}")
            if key in kind.wired:
                raise RecipeError(f"{where}: field {key!r} is set by the pipeline (wired: {', '.join(kind.wired)})")
        check_field_types(where, cls, s.config)
        for role, src in s.inputs.items():
            if role not in kind.required + kind.optional:
                raise RecipeError(f"{where}: unknown input {role!r} for kind {s.kind!r}; takes "
                                  f"{', '.join(kind.required + kind.optional) or 'none'}")
            if src not in seen:
                raise RecipeError(f"{where}: input {role!r} names {src!r}, which is not an earlier stage")
        for role in kind.required:
            if role not in s.inputs:
                raise RecipeError(f"{where}: kind {s.kind!r} needs input {role!r}")
        seen.add(s.name)
    if recipe.side is not None:
        validate_side_lane(recipe)


def check_field_types(where: str, cls: type, config: Mapping[str, Any]) -> None:
    """Every value in ``config`` fits the type annotation of ``cls``'s field of that name as given (``config_cli.
    check_value`` strict: an int is a float, an integral float is not an int, a string is not a list), else
    RecipeError naming ``where`` (recipe and stage), the field, the value and the expected type. Fields ``cls`` lacks
    are skipped (``validate`` names them)."""
    try:
        hints = typing.get_type_hints(cls)
    except Exception as err:  # an annotation that cannot be evaluated: say so rather than skip the checks
        raise RecipeError(f"{where}: cannot read the field types of {cls.__name__} ({err})") from None
    for key, value in config.items():
        if key in hints:
            try:
                check_value(value, hints[key], f"{where}: field {key!r}", strict=True)
            except OverrideError as err:
                raise RecipeError(str(err)) from None


def validate_side_lane(recipe: Recipe) -> None:
    """The side lane can run beside the main one: its stages exist, ``after`` comes before ``join`` (both main-lane
    stages), each lane stage reads only stages done by ``after`` or earlier lane stages, and no main-lane stage
    before ``join`` reads a lane stage."""
    lane = recipe.side
    assert lane is not None
    where = f"recipe {recipe.name!r}, side lane"
    order = {s.name: i for i, s in enumerate(recipe.stages)}
    for name in (*lane.stages, lane.after, lane.join):
        if name not in order:
            raise RecipeError(f"{where}: {name!r} is not a stage of the recipe")
    if lane.after in lane.stages or lane.join in lane.stages:
        raise RecipeError(f"{where}: 'after' and 'join' must be main-lane stages, not lane stages")
    if order[lane.after] >= order[lane.join]:
        raise RecipeError(f"{where}: after={lane.after!r} must come before join={lane.join!r}")
    members = set(lane.stages)
    for s in recipe.stages:
        if s.name in members:
            for src in s.inputs.values():
                if src not in members and order[src] > order[lane.after]:
                    raise RecipeError(f"{where}: {s.name!r} reads {src!r}, which is not done by {lane.after!r}")
        elif order[s.name] < order[lane.join]:
            for src in s.inputs.values():
                if src in members:
                    raise RecipeError(f"{where}: main-lane stage {s.name!r} reads lane stage {src!r} before "
                                      f"join={lane.join!r}")


def config_hash(recipe: Recipe) -> str:
    """A short hash of the resolved stages (names, kinds, configs, inputs)."""
    blob = json.dumps([s.to_dict() for s in recipe.stages], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def prepare(name: str, preset: str, overrides: Mapping[str, Mapping[str, Any]] | None = None) -> Recipe:
    """get_recipe + resolve + validate: the recipe ready to run, or a RecipeError before anything runs."""
    recipe = resolve(get_recipe(name), preset, overrides)
    validate(recipe)
    return recipe
