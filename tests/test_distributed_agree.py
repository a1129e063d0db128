"""`distributed.agree`: every rank gets the same stop decision even though each reads its own clock (2 gloo
processes on CPU). GRPO and pretraining use it so that a wall-clock limit never stops only some ranks."""

import os
import tempfile

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from r1lab.train import distributed as D


def _worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    info = D.DistInfo(rank=rank, local_rank=rank, world_size=world)
    got = [D.agree(rank, info, op="max"), D.agree(rank, info, op="min"), D.agree(int(rank == 1), info, op="max")]
    torch.save(got, os.path.join(out_dir, f"{rank}.pt"))
    dist.barrier()
    os._exit(0)  # skip C++ destructors: gloo's store thread can abort at shutdown (see test_rl_update)


def test_agree_gives_every_rank_the_same_value():
    with tempfile.TemporaryDirectory() as d:
        mp.spawn(_worker, args=(2, os.path.join(d, "init"), d), nprocs=2, join=True)
        results = [torch.load(os.path.join(d, f"{r}.pt")) for r in range(2)]
    assert results[0] == results[1] == [1, 0, 1]


def test_agree_single_process_returns_the_value():
    assert D.agree(7, D.DistInfo(rank=0, local_rank=0, world_size=1)) == 7
