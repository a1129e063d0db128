"""How big must R1's rejection-sampling SFT set be? From a finished speedrun directory: keep its `r1-reject` rows
(the reasoning-RL model's kept samples and the non-reasoning rows), top the set up with worked solutions (R1 format)
to each size asked, SFT the base model on it as the `r1-sft` stage does (the cpu preset's SFT settings), and
evaluate like the speedrun (`--template r1`). Prints one JSON line per size (the 200-row set is the old cpu
preset's; compare the sizes with each other, in the same run).

    python benchmarks/r1_sft_rows.py --run runs/speedrun --rows 200 400 800
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", required=True, help="a speedrun output directory (pretrain/ and r1-reject/ done)")
    ap.add_argument("--rows", type=int, nargs="+", default=[200, 400, 800])
    ap.add_argument("--out", default="runs/r1_sft_rows")
    ap.add_argument("--n-per-family", type=int, default=12)
    a = ap.parse_args()
    from r1lab.data.corpus import write_jsonl_atomic
    from r1lab.pipeline.sample import sft_row
    from r1lab.pipeline.stages import _train_problems, worked_to_r1
    from r1lab.train.sft import SFTConfig, run_sft

    run = Path(a.run)
    old = [json.loads(line) for line in (run / "r1-reject" / "data.jsonl").read_text(encoding="utf-8").splitlines()]
    kept = [r for r in old if r.get("source") in ("rejection", "non-reasoning")]
    n_samples = sum(r.get("source") == "rejection" for r in kept)
    for size in a.rows:
        rows = [r for r in kept if r["source"] == "rejection"]
        for p in _train_problems(size, 1, 2 + 1000)[: max(0, size - len(rows))]:  # the reject stage's top-up
            rows.append(sft_row(p, worked_to_r1(p), "r1") | {"source": "worked"})
        rows += [r for r in kept if r["source"] == "non-reasoning"]
        random.Random(2).shuffle(rows)
        out = Path(a.out) / f"rows{size}"
        data = write_jsonl_atomic(rows, out / "data.jsonl")
        art = run_sft(SFTConfig(model=str(run / "pretrain" / "model"), data=str(data), out_dir=str(out / "sft"),
                                epochs=6, micro_batch=8, seq_len=384, lr=1e-3, save_every=25, eval_every=25,
                                warmup_steps=5))
        res = _evaluate(art["final_dir"], a.n_per_family)
        print(json.dumps({"bench": "r1_sft_rows", "min_rows": size, "rows": len(rows), "rl_samples": n_samples,
                          "sft_steps": art["steps"], "pass@1": round(res["pass_at_1"], 4),
                          "cons@k": round(res["cons_at_k"], 4)}), flush=True)


def _evaluate(model_dir: str, n_per_family: int) -> dict:
    import subprocess
    import sys
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "eval.json"
        subprocess.run([sys.executable, "-m", "r1lab", "eval", "--model", model_dir, "--template", "r1",
                        "--n-per-family", str(n_per_family), "--k", "4", "--max-tokens", "128", "--out", str(out)],
                       check=True, stdout=subprocess.DEVNULL)
        return json.loads(out.read_text())


if __name__ == "__main__":
    main()
