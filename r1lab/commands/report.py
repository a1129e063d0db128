"""Write report.md, PNG plots and results.json for a run directory (made by ``r1lab speedrun``): pretraining loss,
RL reward / accuracy / response length per RL stage, expert load, the table by stage and which findings reproduced.
"""

from __future__ import annotations

NAME = "report"
HELP = "report.md + plots + results.json for a speedrun run directory"


def add_arguments(p) -> None:
    p.add_argument("run_dir", help="run directory (has run.json)")
    p.add_argument("--out", default=None, help="output folder (default RUN_DIR/report)")


def main(args) -> int:
    from r1lab.pipeline.report import write_report
    from r1lab.pipeline.rundir import read_run_json

    read_run_json(args.run_dir)  # missing or corrupt run.json: an error naming the file (printed by r1lab.cli)
    art = write_report(args.run_dir, args.out)
    for claim, verdict, evidence in art["findings"]:
        print(f"{verdict:>31}: {claim} ({evidence})")  # "not reproduced (within noise)" is the longest
    return 0
