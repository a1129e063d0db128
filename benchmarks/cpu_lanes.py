"""The speedrun's side lane on a small CPU: the teacher's and the dense student's training side by side in two
processes with half the threads each, vs one at a time with all the threads (the peer: the speedrun before the
twenty-third session, ``r1lab speedrun --jobs 1``).

Each arm does the same work: ``--steps`` pretraining steps of the teacher (the cpu-demo preset: 4 layers, MoE, MTP)
and ``--student-steps`` (default twice as many) of the student (2 dense layers, no MTP) — about the balance of the
speedrun's two lanes, where each takes ~6 minutes — forward + backward + clip + AdamW on random packed documents
(16 × 256 tokens, vocabulary fitted to the speedrun's tokenizer). "one at a time": a teacher process with all the
threads, then a student process with all the threads; "side by side": both processes at once with half each
(``r1lab.pipeline.lanes.split_threads``), timed from the moment both have warmed up (a file barrier) until the later
one ends; the earlier one's core then idles, as it does in the speedrun. Arms alternate round by round (this sandbox's
speed drifts within minutes); one JSON line per arm with the median seconds, the ratio to the peer, and each
process's own seconds.

Usage:  python benchmarks/cpu_lanes.py [--threads 2] [--steps 30] [--rounds 3]
Smoke:  python benchmarks/cpu_lanes.py --preset tiny --vocab 192 --steps 1 --rounds 1 --micro-batch 2 --seq-len 64
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))


def worker(args: argparse.Namespace) -> None:
    """One process: build the model, warm up two steps, wait at the barrier, time ``steps`` steps, print JSON."""
    import torch

    torch.set_num_threads(args.threads)
    from cpu_attention import packed_batch
    from cpu_vocab import STUDENT, make_step  # the speedrun's student; one AdamW pretraining step

    from r1lab.model import DeepSeekV3Config

    cfg = DeepSeekV3Config.from_preset(args.preset).replace(
        vocab_size=args.vocab, max_position_embeddings=max(args.seq_len, 512),
        **(STUDENT if args.worker == "student" else {}))
    step = make_step(cfg, packed_batch(args.micro_batch, args.seq_len, args.vocab, torch.Generator().manual_seed(0)))
    for _ in range(2):
        step()
    barrier = Path(args.barrier)
    (barrier / f"{args.worker}.ready").touch()
    while len(list(barrier.glob("*.ready"))) < args.parties:
        time.sleep(0.005)
    t0 = time.time()
    for _ in range(args.student_steps if args.worker == "student" else args.steps):
        step()
    print(json.dumps({"start": t0, "end": time.time()}), flush=True)


def launch(model: str, threads: int, barrier: Path, parties: int, args: argparse.Namespace) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    cmd = [sys.executable, __file__, "--worker", model, "--threads", str(threads), "--barrier", str(barrier),
           "--parties", str(parties), "--preset", args.preset, "--vocab", str(args.vocab), "--steps", str(args.steps),
           "--student-steps", str(args.student_steps),
           "--micro-batch", str(args.micro_batch), "--seq-len", str(args.seq_len)]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen) -> dict[str, float]:
    out, _ = proc.communicate()
    if proc.returncode != 0:
        raise SystemExit(f"worker failed (exit {proc.returncode})")
    return json.loads(out.strip().splitlines()[-1])


def one_round(side_by_side: bool, args: argparse.Namespace) -> tuple[float, dict[str, float]]:
    from r1lab.pipeline.lanes import split_threads

    own: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        if side_by_side:
            main_threads, side_threads = split_threads(args.threads)
            procs = {"teacher": launch("teacher", main_threads, Path(tmp), 2, args),
                     "student": launch("student", side_threads, Path(tmp), 2, args)}
            res = {name: finish(p) for name, p in procs.items()}
            own = {name: r["end"] - r["start"] for name, r in res.items()}
            return max(r["end"] for r in res.values()) - min(r["start"] for r in res.values()), own
        for name in ("teacher", "student"):
            (Path(tmp) / "teacher.ready").unlink(missing_ok=True)
            r = finish(launch(name, args.threads, Path(tmp), 1, args))
            own[name] = r["end"] - r["start"]
        return sum(own.values()), own


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=os.cpu_count() or 2, help="threads of the whole machine")
    p.add_argument("--preset", default="cpu-demo")
    p.add_argument("--vocab", type=int, default=1152, help="fitted vocabulary (the speedrun's tokenizer: 1,152)")
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--student-steps", type=int, default=0, help="the student's steps (default 2 × --steps)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--micro-batch", type=int, default=16)
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--worker", choices=["teacher", "student"], help=argparse.SUPPRESS)
    p.add_argument("--barrier", help=argparse.SUPPRESS)
    p.add_argument("--parties", type=int, default=1, help=argparse.SUPPRESS)
    args = p.parse_args()
    args.student_steps = args.student_steps or 2 * args.steps
    if args.worker:
        return worker(args)
    if args.threads < 2:
        raise SystemExit("--threads must be at least 2 (one per lane)")
    arms = {"one at a time (peer)": False, "side by side": True}
    times: dict[str, list[float]] = {name: [] for name in arms}
    owns: dict[str, list[dict[str, float]]] = {name: [] for name in arms}
    for _ in range(args.rounds):
        for name, side in arms.items():
            total, own = one_round(side, args)
            times[name].append(total)
            owns[name].append(own)
    peer = statistics.median(times["one at a time (peer)"])
    for name, ts in times.items():
        med = statistics.median(ts)
        print(json.dumps({"bench": "cpu_lanes", "arm": name, "preset": args.preset, "threads": args.threads,
                          "steps": args.steps, "student_steps": args.student_steps, "tokens_per_step": args.micro_batch * args.seq_len,
                          "s_median": round(med, 3), "s": [round(x, 3) for x in ts],
                          "teacher_s": [round(o["teacher"], 3) for o in owns[name]],
                          "student_s": [round(o["student"], 3) for o in owns[name]],
                          "ratio_speed_vs_peer": round(peer / med, 3)}), flush=True)


if __name__ == "__main__":
    main()
