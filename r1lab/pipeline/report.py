"""The run report: report.md, PNG plots and results.json, from a run directory's DONE records and metric logs.

Idea: the R1 paper's figures and tables, reproduced for our run — pretraining loss; the R1-Zero training curves
(arXiv 2501.12948 Fig. 2 accuracy and Fig. 3 response length over RL steps) for every RL stage; expert load
(DeepSeek-V3 §2.1.2 auxiliary-loss-free balancing); and a table by stage (Table 2/5 style) with pass@1, cons@k,
language mixing, mean response length and wall time. The report states which of the papers' findings reproduced:

1. R1-Zero gains ≥ 25 points pass@1 over the base (paper: AIME 15.6 → 71.0);
2. cons@k ≥ pass@1 (paper: 86.7 vs 71.0);
3. R1 ≥ R1-Zero in pass@1;
4. R1 mixes languages less than R1-Zero (the point of the language-consistency reward);
5. the distilled student beats the same student trained by RL alone (paper §4.1: 72.6 vs 47.0).

A finding whose stages did not run is "not measured"; one whose margin is under two paired standard errors is
marked "(within noise)" (``r1lab.pipeline.significance``). Nothing here changes how stages are evaluated.

``wall_seconds`` of a stage row = the wall time of every non-eval stage its model depends on (transitively),
i.e. the cost of producing that model from scratch in this run.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from r1lab.pipeline.recipes import REPORTED
from r1lab.pipeline.rundir import WALL, read_done, read_run_json, write_json_atomic
from r1lab.pipeline.significance import describe, paired, per_problem, read_records, within_noise
from r1lab.train.metrics import read_metrics

EPS = 1e-9  # "≥" claims tolerate float rounding (0.1 + 0.25 > 0.35 in binary)
RESULT_KEYS = ("name", "model", "pass@1", "cons@k", "k", "mean_response_tokens", "language_mixing_rate",
               "wall_seconds")


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The metric rows of a stage's metrics.jsonl ([] when it has none); a torn last line from a killed run is
    skipped (``r1lab.train.metrics.read_metrics``), as are lines that are not JSON objects."""
    if not path.exists():
        return []
    return [row for row in read_metrics(path) if isinstance(row, dict)]


def lineage(stage: str, stages: dict[str, dict[str, Any]]) -> list[str]:
    """``stage`` and every stage it depends on (transitively), in recipe order.

    >>> st = {"a": {"inputs": {}}, "b": {"inputs": {"m": "a"}}, "c": {"inputs": {"m": "b"}}, "d": {"inputs": {}}}
    >>> lineage("c", st)
    ['a', 'b', 'c']
    """
    seen: set[str] = set()
    todo = [stage]
    while todo:
        s = todo.pop()
        if s in seen or s not in stages:
            continue
        seen.add(s)
        todo += list(stages[s].get("inputs", {}).values())
    return [s for s in stages if s in seen]


def collect(run_dir: str | Path) -> dict[str, Any]:
    """run.json, every stage's DONE record, the results rows and ``records`` (row name → the eval stage's
    per-problem records, for the findings' paired standard errors)."""
    run_dir = Path(run_dir)
    run = read_run_json(run_dir)  # RunDirError naming the file when it is missing or corrupt
    specs = {s["name"]: s for s in run["stages"]}
    done = {name: rec for name in specs if (rec := read_done(run_dir / name)) is not None}
    rows = []
    records = {}
    for eval_stage, label in REPORTED.items():
        rec = done.get(eval_stage)
        if rec is None:
            continue
        if recs := read_records(run_dir / eval_stage / "records.jsonl"):
            records[label] = recs
        art = rec["artifacts"]
        model_stage = specs[eval_stage]["inputs"]["model"]
        cost = sum(done[s]["wall_seconds"] for s in lineage(model_stage, specs)
                   if s in done and specs[s]["kind"] != "eval")
        rows.append({"name": label, "model": str(art.get("model_dir", "")), "pass@1": float(art["pass@1"]),
                     "cons@k": float(art["cons@k"]), "k": int(art["k"]),
                     "mean_response_tokens": float(art["mean_response_tokens"]),
                     "language_mixing_rate": float(art["language_mixing_rate"]), "wall_seconds": float(cost)})
    wall = run_dir / WALL  # the run's own wall time so far (rundir.run_recipe's run clock)
    run_seconds = float(wall.read_text()) if wall.exists() else None
    return {"run": run, "specs": specs, "done": done, "rows": rows, "records": records, "run_seconds": run_seconds}


def results_json(preset: str, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The results.json object: exactly {"preset", "stages": [{RESULT_KEYS}]}.

    >>> r = results_json("cpu", [{"name": "base", "model": "m", "pass@1": 0.1, "cons@k": 0.2, "k": 4,
    ...                           "mean_response_tokens": 9.0, "language_mixing_rate": 0.0, "wall_seconds": 1.0}])
    >>> sorted(r), list(r["stages"][0]) == list(RESULT_KEYS)
    (['preset', 'stages'], True)
    """
    return {"preset": str(preset), "stages": [{k: row[k] for k in RESULT_KEYS} for row in rows]}


def findings(rows: list[dict[str, Any]],
             records: Mapping[str, Sequence[Mapping[str, Any]]] | None = None) -> list[tuple[str, str, str]]:
    """(claim, verdict, evidence) for the five findings. The verdict is "reproduced" | "not reproduced" (from the
    point estimates in ``rows``) | "not measured"; with the stages' evaluation ``records`` (row name → per-problem
    records) the evidence adds the paired gap Δ ± SE and the verdict " (within noise)" when the claim's margin is
    under two standard errors (``r1lab.pipeline.significance``)."""
    by = {r["name"]: r for r in rows}
    recs = records or {}

    def get(name: str, key: str) -> float | None:  # unrounded: verdicts compare these; display rounds
        return float(by[name][key]) if name in by else None

    def show(x: float | None) -> str:
        return "-" if x is None else f"{x:.3f}"

    def gap(a: str, metric_a: str, b: str, metric_b: str, need: float = 0.0) -> tuple[float, float, str] | None:
        """(margin of "a − b ≥ need", SE, text) from the records of stages a and b, or None without records."""
        if a not in recs or b not in recs:
            return None
        d, se, n = paired(per_problem(recs[a], metric_a), per_problem(recs[b], metric_b))
        return (d - need, se, describe(d, se, n)) if n else None

    def verdict(ok: bool | None, gaps: Sequence[tuple[float, float, str] | None] = ()) -> str:
        if ok is None:
            return "not measured"
        noisy = any(g is not None and within_noise(g[0], g[1]) for g in gaps)
        return ("reproduced" if ok else "not reproduced") + (" (within noise)" if noisy else "")

    def evidence(text: str, g: tuple[float, float, str] | None) -> str:
        return f"{text}; {g[2]}" if g is not None and g[2] else text

    out = []
    b, z = get("base", "pass@1"), get("r1-zero", "pass@1")
    ok = None if b is None or z is None else z >= b + 0.25 - EPS
    g = gap("r1-zero", "pass@1", "base", "pass@1", 0.25)
    out.append(("R1-Zero pass@1 ≥ base + 25 points", verdict(ok, [g]),
                evidence(f"base {show(b)}, r1-zero {show(z)}", g)))
    pairs = [(r["name"], r["pass@1"], r["cons@k"]) for r in rows if r["name"] in ("r1-zero", "r1")]
    ok = None if not pairs else all(c >= p - EPS for _, p, c in pairs)
    gs = [gap(n, "cons@k", n, "pass@1") for n, _, _ in pairs]
    out.append(("cons@k ≥ pass@1 (r1-zero, r1)", verdict(ok, gs),
                ", ".join(evidence(f"{n}: pass@1 {p:.3f}, cons@k {c:.3f}", g_)
                          for (n, p, c), g_ in zip(pairs, gs)) or "-"))
    r = get("r1", "pass@1")
    ok = None if r is None or z is None else r >= z - EPS
    g = gap("r1", "pass@1", "r1-zero", "pass@1")
    out.append(("R1 pass@1 ≥ R1-Zero pass@1", verdict(ok, [g]), evidence(f"r1 {show(r)}, r1-zero {show(z)}", g)))
    rm, zm = get("r1", "language_mixing_rate"), get("r1-zero", "language_mixing_rate")
    ok = None if rm is None or zm is None else rm < zm
    g = gap("r1-zero", "mixing", "r1", "mixing")
    out.append(("R1 language mixing < R1-Zero's", verdict(ok, [g]), evidence(f"r1 {show(rm)}, r1-zero {show(zm)}", g)))
    d, o = get("distill-student", "pass@1"), get("rl-only-student", "pass@1")
    ok = None if d is None or o is None else d > o
    g = gap("distill-student", "pass@1", "rl-only-student", "pass@1")
    out.append(("distilled student > RL-only student (pass@1)", verdict(ok, [g]),
                evidence(f"distill {show(d)}, rl-only {show(o)}", g)))
    return out


R1_CHAIN = ("base", "r1-cold-start-sft", "r1-reasoning-rl", "r1-rejection-sft", "r1")


def chain_gaps(records: Mapping[str, Sequence[Mapping[str, Any]]], chain: Sequence[str] = R1_CHAIN) -> list[str]:
    """"B vs A: Δ ± SE" of pass@1 for each consecutive pair of ``chain`` whose records both exist — what each R1
    stage adds to the model before it (the SFT from the base is compared with the reasoning-RL model it learns from).
    """
    out = []
    present = [name for name in chain if name in records]
    for a, b in zip(present, present[1:]):
        d, se, n = paired(per_problem(records[b], "pass@1"), per_problem(records[a], "pass@1"))
        if n:
            out.append(f"{b} vs {a}: {describe(d, se, n)}")
    return out


# ------------------------------------------------------------------------------------------------ plots
def _plot_series(path: Path, title: str, series: list[tuple[str, list[float], list[float]]], xlabel: str,
                 ncols: int = 1) -> Path | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = [s for s in series if s[1]]
    if not series:
        return None
    n = len(series) if ncols > 1 else 1
    fig, axes = plt.subplots(1, n, figsize=(4.2 * n, 3.2), squeeze=False)
    for i, (label, xs, ys) in enumerate(series):
        ax = axes[0][i if ncols > 1 else 0]
        ax.plot(xs, ys, label=label)
        ax.set_xlabel(xlabel)
        ax.set_title(label if ncols > 1 else title, fontsize=9)
        ax.grid(alpha=0.3)
    if ncols == 1:
        axes[0][0].legend(fontsize=8)
    fig.suptitle(title, fontsize=10) if ncols > 1 else None
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _xy(rows: list[dict[str, Any]], key: str) -> tuple[list[float], list[float]]:
    """(steps, values) of ``key``, in step order, one point per step: when rows repeat a step (a run resumed from a
    checkpoint logs the steps after it again) the last row with ``key`` wins, i.e. the run that continued.

    >>> _xy([{"step": 1, "loss": 3.0}, {"step": 2, "loss": 2.5}, {"step": 2, "loss": 2.4}, {"step": 3, "acc": 1}],
    ...     "loss")
    ([1, 2], [3.0, 2.4])
    """
    last: dict[Any, Any] = {}
    for r in rows:
        if r.get(key) is not None and isinstance(r.get("step"), int | float) and not isinstance(r["step"], bool):
            last[r["step"]] = r[key]
    steps = sorted(last)
    return steps, [last[x] for x in steps]


def make_plots(run_dir: Path, out_dir: Path, specs: dict[str, dict[str, Any]]) -> dict[str, str]:
    """PNG plots; returns name → file name (relative to out_dir)."""
    plots: dict[str, str] = {}
    pre = _read_jsonl(run_dir / "pretrain" / "metrics.jsonl")
    if (p := _plot_series(out_dir / "pretrain_loss.png", "pretraining loss",
                          [("loss", *_xy(pre, "loss")), ("mtp", *_xy(pre, "mtp"))], "step")):
        plots["pretraining loss"] = p.name
    if (p := _plot_series(out_dir / "expert_load.png", "expert load (max / mean tokens per expert)",
                          [("load", *_xy(pre, "load")), ("load_worst", *_xy(pre, "load_worst"))], "step")):
        plots["expert load"] = p.name
    for name, spec in specs.items():
        if spec["kind"] != "grpo":
            continue
        rows = _read_jsonl(run_dir / name / "metrics.jsonl")
        series = [("reward", *_xy(rows, "reward")), ("accuracy (train batch)", *_xy(rows, "accuracy")),
                  ("mean response length", *_xy(rows, "response_len_mean")),
                  ("language mixing (train batch)", *_xy(rows, "mixing"))]
        if (p := _plot_series(out_dir / f"rl_{name}.png", f"RL stage {name}", series, "RL step", ncols=3)):
            plots[f"RL: {name}"] = p.name
    return plots


# ------------------------------------------------------------------------------------------------ markdown
def _fmt(x: Any, digits: int = 3) -> str:
    return "-" if x is None else (f"{x:.{digits}f}" if isinstance(x, float) else str(x))


def render_markdown(data: dict[str, Any], plots: dict[str, str], note: str = "") -> str:
    run, done, rows = data["run"], data["done"], data["rows"]
    lines = [f"# r1lab run report — recipe `{run['recipe']}`, preset `{run['preset']}`", "",
             f"Config hash `{run['config_hash']}`. {note}".rstrip(), "", "## Results by stage", "",
             "| stage | pass@1 | cons@k | k | language mixing | mean response tokens | wall s (model lineage) |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['name']} | {r['pass@1']:.3f} | {r['cons@k']:.3f} | {r['k']} | "
                     f"{r['language_mixing_rate']:.3f} | {r['mean_response_tokens']:.1f} | {r['wall_seconds']:.0f} |")
    lines += ["", "## Did the papers' findings reproduce?", "", "| finding | verdict | evidence |", "|---|---|---|"]
    for claim, verdict, evidence in findings(rows, data.get("records")):
        lines.append(f"| {claim} | **{verdict}** | {evidence} |")
    lines += ["", "Verdicts come from the evaluation above as run; nothing was tuned to make them pass. Tiny models, "
              "few RL steps and ~100 test problems make these numbers noisy (k samples per problem, temperature 0.6): "
              "Δ ± SE is the paired gap over the same test problems, and \"within noise\" marks a claim whose margin "
              "is under two standard errors (`r1lab.pipeline.significance`).", ""]
    if gaps := chain_gaps(data.get("records") or {}):
        lines += ["R1 stage by stage, pass@1 against the stage before: " + "; ".join(gaps) + ".", ""]
    lines += ["## Stages", "", "| stage | kind | wall s | notes |", "|---|---|---|---|"]
    for name, spec in data["specs"].items():
        rec = done.get(name)
        art = rec["artifacts"] if rec else {}
        notes = ", ".join(f"{k}={_fmt(v)}" for k, v in art.items()
                          if isinstance(v, int | float) and not isinstance(v, bool))[:160]
        lines.append(f"| {name} | {spec['kind']} | {_fmt(rec['wall_seconds'], 1) if rec else 'not done'} | {notes} |")
    caveats = [f"`{name}` kept {rec['artifacts']['kept']} sampled responses and was topped up with "
               f"{rec['artifacts']['topped_up']} worked task solutions (rewritten into the R1 format)"
               for name, rec in done.items() if rec["artifacts"].get("topped_up")]
    if caveats:
        lines += ["", "Data caveats: " + "; ".join(caveats) + ". SFT on these stages therefore learns mostly from "
                  "reference solutions, not from the model's own samples."]
    total = sum(r["wall_seconds"] for r in done.values())
    elapsed = f" The run itself, start to this report: {data['run_seconds']:.0f} s" if data.get("run_seconds") else ""
    lines += ["", f"Total wall time of finished stages: {total:.0f} s.{elapsed}"
              + (" (with `--jobs 2` the side lane's stages ran beside the main lane's)." if elapsed else ""),
              "", "## Plots", ""]
    for title, file in plots.items():
        lines += [f"### {title}", "", f"![{title}]({file})", ""]
    return "\n".join(lines) + "\n"


def write_report(run_dir: str | Path, out_dir: str | Path | None = None, note: str = "") -> dict[str, Any]:
    """Write report.md, *.png and results.json into ``out_dir`` (default run_dir/report); also copy results.json
    to the run directory root. Returns the artifact paths and the findings."""
    run_dir = Path(run_dir)
    out = Path(out_dir) if out_dir else run_dir / "report"
    out.mkdir(parents=True, exist_ok=True)
    data = collect(run_dir)
    plots = make_plots(run_dir, out, data["specs"])
    results = results_json(data["run"]["preset"], data["rows"])
    write_json_atomic(out / "results.json", results)
    write_json_atomic(run_dir / "results.json", results)
    (out / "report.md").write_text(render_markdown(data, plots, note), encoding="utf-8")
    print(f"report: {out / 'report.md'} ({len(plots)} plots, {len(data['rows'])} evaluated stages)", flush=True)
    return {"report": str(out / "report.md"), "results": str(out / "results.json"), "plots": sorted(plots.values()),
            "findings": [list(f) for f in findings(data["rows"], data["records"])]}


