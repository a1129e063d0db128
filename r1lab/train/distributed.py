"""Data parallelism applied from outside the model: process-group setup from torchrun's environment, DDP or FSDP2
wrapping, rank sharding of a global batch, full-state gathering for checkpoints.

Ideas: DistributedDataParallel (Li et al. 2020) replicates the model and averages gradients; FSDP2
(``torch.distributed.fsdp.fully_shard``, per-parameter DTensor sharding, as torchtitan applies it) shards parameters,
gradients and optimizer state, with one ``fully_shard`` per decoder block plus the root. The model code stays
single-device (V3's own 2048-GPU recipe — 16-way pipeline, 64-way expert, ZeRO-1 data parallel — is far beyond a lab
setup; this module is the data-parallel slice of it).

Notes:
- DDP is created with ``broadcast_buffers=False``: the MoE token counters are per-rank buffers summed by
  ``update_expert_bias`` (an all-reduce inside the model); broadcasting rank 0's buffers at every forward would erase
  the other ranks' counts. The expert biases stay identical on all ranks because every rank applies the same update.
- Backend: ``nccl`` on CUDA, ``gloo`` on CPU.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

PARALLEL_MODES = ("ddp", "fsdp")


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_distributed(device_type: str = "cpu") -> DistInfo:
    """Initialises the default process group when launched by torchrun (``WORLD_SIZE`` > 1); otherwise returns a
    single-process ``DistInfo``. Idempotent."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        if device_type == "cuda":
            torch.cuda.set_device(local)
        dist.init_process_group(backend=backend_for(device_type))
    return DistInfo(rank=rank, world_size=world, local_rank=local)


def backend_for(device_type: str) -> str:
    """Process-group backend: gloo on CPU; on CUDA NCCL for CUDA tensors *and* gloo for CPU tensors, because the
    loops all-reduce small CPU tensors (loss sums, token counts, stop decisions) beside the CUDA gradients — with
    NCCL alone those calls fail ("no backend for device type cpu").

    >>> backend_for("cuda"), backend_for("cpu")
    ('cpu:gloo,cuda:nccl', 'gloo')
    """
    return "cpu:gloo,cuda:nccl" if device_type == "cuda" else "gloo"


def destroy_distributed(sync: bool = False) -> None:
    """Tear down the process group; ``sync``: first wait for every rank (after a normal finish), so that no rank
    destroys the group while another still uses it (a gloo worker then aborts the process at exit)."""
    if dist.is_available() and dist.is_initialized():
        if sync:
            dist.barrier()
        dist.destroy_process_group()


def wrap_model(model: nn.Module, mode: str, info: DistInfo) -> nn.Module:
    """DDP or FSDP2 around ``model`` when ``info.enabled``; the model itself when single-process."""
    if not info.enabled:
        return model
    if mode not in PARALLEL_MODES:
        raise ValueError(f"parallel must be one of {PARALLEL_MODES}, got {mode!r}")
    if mode == "ddp":
        from torch.nn.parallel import DistributedDataParallel

        device_ids = [info.local_rank] if next(model.parameters()).is_cuda else None
        return DistributedDataParallel(model, device_ids=device_ids, broadcast_buffers=False)
    from torch.distributed.fsdp import fully_shard

    for layer in model.model.layers:  # MTP modules stay in the root unit: mtp_forward calls their submodules directly
        fully_shard(layer)
    fully_shard(model)
    return model


def unwrap(model: nn.Module) -> nn.Module:
    """The underlying model of a DDP wrapper (FSDP2 shards in place, so it is the model itself)."""
    return getattr(model, "module", model)


def no_sync_context(model: nn.Module, last_micro: bool):
    """Skip the gradient all-reduce on all but the last micro-batch of an accumulation (DDP ``no_sync``; FSDP2
    ``set_requires_gradient_sync``); a null context otherwise."""
    import contextlib

    if hasattr(model, "no_sync") and not last_micro:
        return model.no_sync()
    if hasattr(model, "set_requires_gradient_sync"):
        model.set_requires_gradient_sync(last_micro)
    return contextlib.nullcontext()


def all_reduce_sum(value: float, info: DistInfo, device: torch.device | str = "cpu") -> float:
    """Sum of a Python float over ranks (the value itself when single-process)."""
    if not info.enabled:
        return float(value)
    t = torch.tensor([float(value)], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return float(t.item())


def agree(value: int, info: DistInfo, op: str = "min") -> int:
    """The same integer on every rank (the min, or the max, over ranks), e.g. so that all ranks stop at one step
    even though each reads its own clock. CPU tensor: it goes through gloo (``backend_for``)."""
    if not info.enabled:
        return value
    t = torch.tensor([value], dtype=torch.int64)
    torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MIN if op == "min" else torch.distributed.ReduceOp.MAX)
    return int(t.item())


def shard_rows(rows: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """This rank's contiguous slice of a global micro-batch of row indices (length divisible by world size)."""
    n = rows.shape[0]
    if n % info.world_size:
        raise ValueError(f"global micro-batch of {n} rows is not divisible by world size {info.world_size}")
    per = n // info.world_size
    return rows[info.rank * per: (info.rank + 1) * per]


def full_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """Full (unsharded, CPU) model state dict, for saving: FSDP2 DTensors are gathered (a collective: call it on
    every rank); DDP / plain models just return their state dict."""
    model = unwrap(model)
    sd = model.state_dict()
    if any(hasattr(v, "full_tensor") for v in sd.values()):
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            get_model_state_dict,
        )

        return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    return sd


def is_sharded(model: nn.Module) -> bool:
    """True for an FSDP2 model (its parameters are DTensors)."""
    return any(hasattr(p, "full_tensor") for p in unwrap(model).parameters())


def optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict:
    """Optimizer state for ``training_state.pt``: the plain ``state_dict`` (single process, DDP), or for FSDP2 the
    full (unsharded, CPU, parameter-name keyed) state gathered with ``torch.distributed.checkpoint`` — a collective."""
    if not is_sharded(model):
        return optimizer.state_dict()
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        get_optimizer_state_dict,
    )

    return get_optimizer_state_dict(unwrap(model), optimizer,
                                    options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def load_optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer, state: dict) -> None:
    """Inverse of ``optimizer_state`` (FSDP2: every rank passes the full state; each keeps its shard)."""
    if not is_sharded(model):
        optimizer.load_state_dict(state)
        return
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        set_optimizer_state_dict,
    )

    set_optimizer_state_dict(unwrap(model), optimizer, state, options=StateDictOptions(full_state_dict=True))
