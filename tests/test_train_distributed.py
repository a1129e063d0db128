"""torchrun --nproc-per-node 2 on CPU (gloo): DDP and FSDP2 give the single-process losses at the same global batch,
and an FSDP2 run resumes from its own checkpoint."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from train_helpers import make_env, tiny_config

STEPS = 5


def _args(env, out: Path, **kw) -> list[str]:
    """The CLI form of tests/train_helpers.tiny_config (so both runs share every hyper-parameter), plus ``kw``."""
    from dataclasses import asdict

    cfg = asdict(tiny_config(env, out, steps=STEPS, warmup_steps=1, eval_frac=0.02))
    cfg.update(kw)
    return [x for k, v in cfg.items() if v is not None
            for x in (f"--{k.replace('_', '-')}", json.dumps(v) if isinstance(v, (list, dict, bool)) else str(v))]


def _torchrun(env, out: Path, **kw) -> list[float]:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "r1lab", "pretrain", *_args(env, out, **kw)]
    res = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=240,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in rows]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("dist")
    env = make_env(root / "env")
    from r1lab.train.pretrain import run_pretrain

    torch.set_num_threads(1)
    single = run_pretrain(tiny_config(env, root / "single", steps=STEPS, warmup_steps=1, micro_batch=2,
                                      grad_accum=2, eval_frac=0.02))["losses"]
    return env, root, single


def test_ddp_two_ranks_equal_single_process(setup):
    env, root, single = setup
    losses = _torchrun(env, root / "ddp", micro_batch=2, parallel="ddp")
    assert len(losses) == STEPS and losses[-1] < losses[0]
    torch.testing.assert_close(torch.tensor(losses), torch.tensor(single), rtol=0, atol=1e-5)
    assert (root / "ddp" / "model" / "model.safetensors").is_file()


@pytest.mark.slow
def test_fsdp_two_ranks_equal_single_process_across_a_resume(setup):
    """FSDP2 run stopped after step 3 (checkpoint at 3), then --resume: the union of the losses is the single run's."""
    env, root, single = setup
    out = root / "fsdp"
    kw = {"micro_batch": 2, "parallel": "fsdp", "ckpt_every": 3}
    first = _torchrun(env, out, **kw, stop_after=3)
    (out / "metrics.jsonl").unlink()
    rest = _torchrun(env, out, **kw, resume=True)
    assert len(first) == 3 and len(rest) == STEPS - 3
    torch.testing.assert_close(torch.tensor(first + rest), torch.tensor(single), rtol=0, atol=1e-5)
    assert (out / "model" / "model.safetensors").is_file()
