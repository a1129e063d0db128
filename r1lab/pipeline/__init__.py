"""The R1 pipeline: evaluation (pass@1, cons@k), rejection sampling, a reward model, recipes with a resumable
run-directory state machine, the report, and the speedrun that chains every stage (arXiv 2501.12948 §2–§4)."""
