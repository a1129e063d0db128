"""Size presets for the recipes: ``tiny`` (tests, every stage a handful of steps), ``cpu`` (the speedrun on 2 CPU
cores: 17-18 minutes on a 2-core Intel Xeon with AVX-512 with the student's side lane, 18-19 one stage at a time; 25-28
one stage at a time on a 2-core AMD EPYC without AVX-512), ``gpu`` (one GPU, a bigger model and longer stages).

Keys: ``"kind:<kind>"`` applies to every stage of that kind, ``"<stage name>"`` to one stage (applied after the
kind's entry). Values are fields of the stage kind's config dataclass (see ``recipes.KINDS``); ``recipes.resolve``
rejects entries naming no known stage or kind, ``recipes.validate`` unknown fields.

Measured (2 cores shared with other jobs, load 5–10, ``--threads 1``; 2026-11-24): tokenizer 7 s, pretrain 628 s,
student-base 221 s, GRPO 5–11 s per step of 64 samples (r1-zero 327 s, r1-reasoning-rl 160 s, r1 51 s, rl-only
148 s), SFT 5–18 s, sampling stages 24–51 s, evals 15–34 s each (84 test problems × (4 samples + greedy));
≈ 31 min in total under that load. Idle machine, 2026-11-24 (third session): the whole cpu run in 1115 s
(pretraining 1100 steps 418 s, student-base 1100 steps 307 s, distill-data 84 s). The current preset: EXPECTED_SECONDS
below.
"""

from __future__ import annotations

from typing import Any

ALL = ["arithmetic", "countdown", "equations", "word", "arithmetic_zh", "word_zh"]
EN_ZH = ["arithmetic", "word", "arithmetic_zh", "word_zh"]

_TINY: dict[str, dict[str, Any]] = {
    "kind:tokenizer": {"n_per_family": 40, "levels": [1], "vocab_size": 300, "template_share": 0.1},
    "kind:pretrain": {"preset": "tiny", "steps": 6, "seq_len": 128, "micro_batch": 4, "warmup_steps": 1,
                      "eval_every": 0, "ckpt_every": 2, "exact_match": 0, "corpus_n_per_family": 40,
                      "model_overrides": {"max_position_embeddings": 1024}},
    "kind:grpo": {"preset": "tiny", "steps": 3, "prompts_per_step": 2, "group_size": 2, "max_new_tokens": 12,
                  "eval_every": 0, "save_every": 1, "n_train_per_family": 8, "eval_n_per_family": 2,
                  "families": ["arithmetic", "word"], "log_samples": 1},
    "kind:sft": {"epochs": 1, "max_steps": 3, "micro_batch": 4, "seq_len": 128, "save_every": 1},
    "kind:eval": {"n_per_family": 1, "k": 2, "max_tokens": 12, "families": ["arithmetic", "word_zh"]},
    "kind:cold_start": {"n_per_family": 1, "k": 2, "max_tokens": 12, "max_response_tokens": 12,
                        "n_worked_per_family": 2},
    "kind:reject": {"n_per_family": 1, "k": 2, "max_tokens": 12, "max_response_tokens": 12, "min_rows": 8,
                    "n_non_reasoning": 4},
    "kind:reward_model": {"steps": 4, "n_pairs": 8, "batch_size": 4, "max_len": 96},
    "kind:hf_model": {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 1,
                      "intermediate_size": 64, "max_position_embeddings": 256},
    "student-base": {"steps": 4},
    "r1-reasoning-rl": {"families": ["arithmetic", "arithmetic_zh"]},
    "r1": {"families": ["arithmetic", "arithmetic_zh"]},
}

_CPU: dict[str, dict[str, Any]] = {
    "kind:tokenizer": {"n_per_family": 1500, "levels": [1, 2], "vocab_size": 2048, "template_share": 0.2},
    # WSD at 2e-3 (the pretrain defaults, named here so that the run's config hash records them): a better base than
    # cosine at 1e-3 in the same 1100 steps (docs/benchmarks.md, eleventh session)
    "kind:pretrain": {"preset": "cpu-demo", "steps": 1100, "ckpt_every": 200, "eval_every": 550, "exact_match": 0,
                      "schedule": "wsd", "lr": 2e-3},
    # 192 new tokens (was 128): word and equation solutions work their sums in columns since the fourteenth session,
    # and 75 % of the equations' worked R1-format responses at difficulty 1 are over 120 tokens (p90 160, max ~200)
    "kind:grpo": {"steps": 30, "prompts_per_step": 8, "group_size": 8, "max_new_tokens": 192, "eval_every": 0,
                  "save_every": 5, "families": ALL, "n_train_per_family": 300, "lr": 1e-4, "log_samples": 2},
    "kind:sft": {"epochs": 6, "micro_batch": 8, "seq_len": 384, "lr": 1e-3, "save_every": 25, "eval_every": 25,
                 "warmup_steps": 5},
    "kind:eval": {"n_per_family": 12, "k": 4, "max_tokens": 192},
    "kind:cold_start": {"n_per_family": 12, "k": 4, "max_tokens": 192, "max_response_tokens": 180,
                        "n_worked_per_family": 50},
    "kind:reject": {"n_per_family": 16, "k": 4, "max_tokens": 192, "max_response_tokens": 180, "min_rows": 200,
                    "n_non_reasoning": 30},
    "kind:reward_model": {"steps": 40, "n_pairs": 256, "batch_size": 16, "max_len": 192},
    # The student gets the base's pretraining budget, and distill-data samples 100 prompts per family (207 teacher
    # samples kept vs 36 at 16 prompts): with 500 steps and 36 samples the distilled student scored 0.009.
    # Two layers, not the teacher's four: smaller than the teacher as the paper's students are (660k parameters vs
    # the teacher's 843k active), and its pretraining ~40 % cheaper. On the seventeenth session's teacher data (one
    # run each): 2 layers distil to 0.702 vs RL-only 0.512, 3 layers 0.568 vs 0.271, 4 layers (the speedrun until
    # then) 0.616 vs 0.571 (docs/benchmarks.md, eighteenth session).
    "student-base": {"steps": 1100, "model_overrides": {"n_routed_experts": 0, "num_nextn_predict_layers": 0,
                                                        "num_hidden_layers": 2}},
    "distill-data": {"n_per_family": 100, "min_rows": 400},
    # The two RL stages that start from an SFT model train at lr 3e-5, not R1-Zero's 1e-4. Rerun with GRPO seeds 0-2
    # from three runs' starting models (nine reruns per stage and lr), at 1e-4 they moved pass@1 by −0.040 (reasoning
    # RL: all nine lost, −0.021 to −0.071) and −0.027 (final RL: −0.149 to +0.009) on average; at 3e-5 both held
    # (+0.006 each, worst −0.018). `benchmarks/rl_stage_variance.sh`, docs/benchmarks.md, twenty-second session.
    "r1-reasoning-rl": {"families": EN_ZH, "steps": 20, "lr": 3e-5},
    # The rejection-sampling SFT set is R1's big one (§2.3.3: ~800k rows vs thousands for the cold start). At 200
    # rows (55 kept samples + worked top-up) the SFT-from-base model scored 0.134, at 400 0.202, at 800 0.235
    # (benchmarks/r1_sft_rows.py, docs/benchmarks.md); most added rows are worked solutions, not the RL model's samples.
    "r1-reject": {"min_rows": 800},
    # 9 epochs, not the SFT stages' 6: at 6 this stage landed at ~0.30 or ~0.45 (168 test problems) depending on which
    # ~40 sampled rows its set held, whatever the seed; at 9 both sets of the twelfth session gave 0.42-0.45 (at 3 both
    # ~0.26). docs/benchmarks.md, twelfth session.
    "r1-sft": {"epochs": 9},
    "r1": {"families": EN_ZH, "steps": 12, "lr": 3e-5},
}

# The gpu preset is sized by wall clock, not steps: ≈ 20 minutes on one H100 (estimate from the fifth session's
# benchmarks; not yet run end to end). Pretraining stages fit their step count to ``max_minutes`` after timing
# their first steps (``r1lab.train.budget``; "steps" is only the ceiling), so the LR schedule still decays fully on
# a slower or faster card; GRPO stages stop at ``max_minutes`` (constant LR after warm-up). Sampling and eval stages
# are bounded by their counts. Budget: pretrain 5 min, student-base 2, GRPO 2.5 + 1 + 1 + 1.5, the rest ≈ 7-8
# (SFT, sampling, nine evals, compilation). A gpu-small checkpoint with its optimizer state is ~8.5 GB, hence
# checkpoints every 1,000 steps only.
_GPU: dict[str, dict[str, Any]] = {
    "kind:tokenizer": {"n_per_family": 4000, "levels": [1, 2, 3], "vocab_size": 4096, "template_share": 0.2},
    # vocabulary: fitted to the tokenizer (≤ 4,096 ids; pretraining's fit_vocab) instead of the preset's 32,768
    # lr: 1e-3, not the cpu-demo default 2e-3 (tuned for the 2M-parameter model only); schedule: the default WSD
    "kind:pretrain": {"preset": "gpu-small", "steps": 20000, "max_minutes": 5.0, "warmup_steps": 100, "compile": True,
                      "lr": 1e-3,
                      "ckpt_every": 1000, "eval_every": 250, "micro_batch": 32, "seq_len": 512, "exact_match": 0},
    # lr: a twentieth of the pretraining peak, the ratio that was best on the cpu-demo model (1e-4 vs 2e-3); unmeasured
    "kind:grpo": {"steps": 500, "max_minutes": 1.0, "prompts_per_step": 32, "group_size": 8, "max_new_tokens": 256,
                  "lr": 5e-5, "eval_every": 0, "save_every": 10, "families": ALL},
    "r1-zero": {"max_minutes": 2.5},
    "rl-only-student": {"max_minutes": 1.5},
    "kind:sft": {"epochs": 2, "micro_batch": 32, "seq_len": 512, "save_every": 200},
    "kind:eval": {"n_per_family": 50, "k": 4, "max_tokens": 256},
    "kind:cold_start": {"n_per_family": 100, "k": 4, "max_tokens": 256, "max_response_tokens": 240,
                        "n_worked_per_family": 300},
    "kind:reject": {"n_per_family": 120, "k": 4, "max_tokens": 256, "max_response_tokens": 240, "min_rows": 800,
                    "n_non_reasoning": 300},
    "kind:reward_model": {"steps": 200, "n_pairs": 2048, "batch_size": 32, "max_len": 384},
    "student-base": {"max_minutes": 2.0, "model_overrides": {"n_routed_experts": 0, "num_nextn_predict_layers": 0}},
    # post-SFT RL stages at 0.3× the R1-Zero lr, the cpu preset's measured ratio (3e-5 vs 1e-4); unmeasured here
    "r1-reasoning-rl": {"families": EN_ZH, "lr": 1.5e-5},
    "r1": {"families": EN_ZH, "lr": 1.5e-5},
    "kind:hf_model": {"hidden_size": 384, "num_hidden_layers": 6, "num_attention_heads": 6, "num_key_value_heads": 2,
                      "intermediate_size": 1024, "max_position_embeddings": 1024},
}

PRESETS: dict[str, dict[str, dict[str, Any]]] = {"tiny": _TINY, "cpu": _CPU, "gpu": _GPU}

# Wall seconds of each stage in one measured run, for the speedrun's "about N min to go" (the remaining main-lane
# stages' times here × how much slower or faster this machine ran the finished ones; ``rundir.eta_seconds``). cpu: the
# twenty-fourth session's run on a 2-core Intel Xeon with AVX-512 (2026-11-26; `r1lab speedrun --preset cpu`, --jobs 2
# by default, /tmp/s24/run): 1082 s from start to finish, its stages adding up to 1452 s (the student's three ran
# beside the teacher's R1 stages, each lane on one thread); the twenty-third session's run of the same preset took
# 1017 s in a faster hour, the twenty-second's with --jobs 1 1128 s, and 1489 s on the 2-core AMD EPYC without
# AVX-512 of sessions 12-20 with the preset before (docs/benchmarks.md, twentieth to twenty-fourth sessions).
EXPECTED_SECONDS: dict[str, dict[str, float]] = {
    "cpu": {"tokenizer": 14, "pretrain": 498, "eval-base": 6, "r1-zero": 82, "eval-r1-zero": 6, "cold-start-data": 6,
            "r1-cold-sft": 44, "eval-r1-cold-sft": 5, "r1-reasoning-rl": 48, "eval-r1-reasoning-rl": 7,
            "r1-reject": 9, "r1-sft": 119, "eval-r1-sft": 8, "reward-model": 23, "r1": 39, "eval-r1": 6,
            "distill-data": 32, "student-base": 318, "distill-student": 27, "eval-distill-student": 3,
            "rl-only-student": 46, "eval-rl-only-student": 6, "qwen2-student": 2, "distill-qwen2": 74,
            "eval-distill-qwen2": 21, "report": 3},
}
# The same run from start to finish (with --jobs 2 its stages add up to more than this).
MEASURED_RUN_SECONDS: dict[str, float] = {"cpu": 1082}
