"""Hugging Face checkpoints for DeepSeek-V3: safetensors (sharded with an index), hub weight names, MTP, FP8.

Name mapping between our modules and the checkpoint (everything else is identical):
- routed experts: ours ``mlp.experts.gate_up_proj`` [E, 2I, D] / ``mlp.experts.down_proj`` [E, D, I]
  ↔ hub ``mlp.experts.{j}.{gate_proj, up_proj, down_proj}.weight`` (what DeepSeek ships and transformers saves);
- MTP: ours ``model.mtp.{k}.*`` ↔ hub ``model.layers.{num_hidden_layers + k}.*``, plus the copies
  ``embed_tokens.weight`` and ``shared_head.head.weight`` that DeepSeek stores in each MTP layer (written on save,
  ignored on load: ours share the main embedding and head).
A transformers-saved checkpoint has no MTP tensors although its config says num_nextn_predict_layers = 1: it loads
without MTP, with a warning. FP8 checkpoints (e4m3 ``weight`` + fp32 ``weight_scale_inv`` per 128×128 block) are
dequantised on load (``r1lab.fp8.dequantize_state_dict``). Missing or mis-shaped tensors are an error that lists them
— never a silent random initialisation. Files are written to a temporary name and renamed.
"""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from .config import DeepSeekV3Config

log = logging.getLogger(__name__)

_EXPERT_RE = re.compile(r"^(.*\.mlp\.experts)\.(\d+)\.(gate_proj|up_proj|down_proj)\.weight$")
_LAYER_RE = re.compile(r"^model\.layers\.(\d+)\.(.*)$")
_MTP_RE = re.compile(r"^model\.mtp\.(\d+)\.(.*)$")
_MTP_COPIES = ("embed_tokens.weight", "shared_head.head.weight")


class CheckpointError(RuntimeError):
    """A checkpoint that does not match the model; the message lists every offending tensor."""


# ---------------------------------------------------------------------------------------------- ours → hub
def to_hub_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Our state dict in hub names (per-expert weights, MTP as extra layers with their shared-tensor copies)."""
    config: DeepSeekV3Config = model.config
    n_main = config.num_hidden_layers
    out: dict[str, torch.Tensor] = {}
    for name, tensor in model.state_dict().items():
        if config.tie_word_embeddings and name == "lm_head.weight":
            continue
        m = _MTP_RE.match(name)
        if m:
            name = f"model.layers.{n_main + int(m.group(1))}.{m.group(2)}"
        if name.endswith("mlp.experts.gate_up_proj"):
            prefix = name[: -len(".gate_up_proj")]
            gate, up = tensor.chunk(2, dim=1)
            for j in range(tensor.shape[0]):
                out[f"{prefix}.{j}.gate_proj.weight"] = gate[j]
                out[f"{prefix}.{j}.up_proj.weight"] = up[j]
        elif name.endswith("mlp.experts.down_proj"):
            prefix = name[: -len(".down_proj")]
            for j in range(tensor.shape[0]):
                out[f"{prefix}.{j}.down_proj.weight"] = tensor[j]
        else:
            out[name] = tensor
    for k in range(config.num_nextn_predict_layers):
        out[f"model.layers.{n_main + k}.embed_tokens.weight"] = model.model.embed_tokens.weight
        out[f"model.layers.{n_main + k}.shared_head.head.weight"] = model.lm_head.weight
    return out


# ---------------------------------------------------------------------------------------------- hub → ours
def hub_name(name: str, n_main: int) -> str:
    """Our parameter name → the checkpoint's name (MTP modules are layers ``n_main + k`` there).

    >>> hub_name("model.mtp.0.mlp.experts", 4), hub_name("model.norm.weight", 4)
    ('model.layers.4.mlp.experts', 'model.norm.weight')
    """
    m = re.match(r"^model\.mtp\.(\d+)\.(.*)$", name)
    return f"model.layers.{n_main + int(m.group(1))}.{m.group(2)}" if m else name


def from_hub_state_dict(hub: dict[str, torch.Tensor], config: DeepSeekV3Config,
                        problems: dict[str, list[str]] | None = None) -> dict[str, torch.Tensor]:
    """Hub names → our names: stack per-expert weights, move MTP layers, drop the MTP copies of shared tensors.

    Per-expert tensors that are missing, mis-shaped or beyond ``n_routed_experts`` are listed by their checkpoint
    names: put in ``problems`` under our experts' prefix when given (that layer's experts are then left out, for the
    caller's report), else raised as one CheckpointError.
    """
    n_main = config.num_hidden_layers
    out: dict[str, torch.Tensor] = {}
    experts: dict[str, dict[int, dict[str, torch.Tensor]]] = {}
    for name, tensor in hub.items():
        m = _LAYER_RE.match(name)
        if m and int(m.group(1)) >= n_main:
            rest = m.group(2)
            if rest in _MTP_COPIES:
                continue
            name = f"model.mtp.{int(m.group(1)) - n_main}.{rest}"
        e = _EXPERT_RE.match(name)
        if e:
            experts.setdefault(e.group(1), {}).setdefault(int(e.group(2)), {})[e.group(3)] = tensor
            continue
        out[name] = tensor
    d, i = config.hidden_size, config.moe_intermediate_size
    shapes = {"gate_proj": (i, d), "up_proj": (i, d), "down_proj": (d, i)}
    found: dict[str, list[str]] = {}
    for prefix, by_index in experts.items():
        hub_prefix = hub_name(prefix, n_main)
        bad = [f"unexpected: {hub_prefix}.{j}.{p}.weight (n_routed_experts = {config.n_routed_experts})"
               for j in sorted(by_index) if j >= config.n_routed_experts for p in sorted(by_index[j])]
        for j in range(config.n_routed_experts):
            for p, shape in shapes.items():
                t = by_index.get(j, {}).get(p)
                if t is None:
                    bad.append(f"missing: {hub_prefix}.{j}.{p}.weight {shape}")
                elif tuple(t.shape) != shape:
                    bad.append(f"mis-shaped: {hub_prefix}.{j}.{p}.weight expected {shape} got {tuple(t.shape)}")
        if bad:
            found[prefix] = bad
            continue
        ids = range(config.n_routed_experts)
        out[f"{prefix}.gate_up_proj"] = torch.stack(
            [torch.cat([by_index[j]["gate_proj"], by_index[j]["up_proj"]], dim=0) for j in ids])
        out[f"{prefix}.down_proj"] = torch.stack([by_index[j]["down_proj"] for j in ids])
    if found and problems is None:
        lines = [line for bad in found.values() for line in bad]
        raise CheckpointError("expert tensors do not match the config:\n  " + "\n  ".join(lines[:50]))
    if problems is not None:
        problems.update(found)
    return out


# ---------------------------------------------------------------------------------------------- save
def _parse_size(size: int | str) -> int:
    if isinstance(size, int):
        return size
    units = {"KB": 10**3, "MB": 10**6, "GB": 10**9, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30}
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMG]I?B)\s*", size.upper())
    if not m:
        raise ValueError(f"max_shard_size: cannot read {size!r} (e.g. '5GB')")
    return int(float(m.group(1)) * units[m.group(2)])


FP8_QUANTIZATION_CONFIG = {"activation_scheme": "dynamic", "fmt": "e4m3", "quant_method": "fp8",
                           "weight_block_size": [128, 128]}  # what DeepSeek-V3's released config.json says


def save_pretrained(model: torch.nn.Module, directory: str | os.PathLike, max_shard_size: int | str = "5GB",
                    dtype: torch.dtype | None = None, fp8: bool = False) -> Path:
    """Write config.json + safetensors (one file, or shards + model.safetensors.index.json) atomically.

    ``fp8=True`` writes DeepSeek's FP8 checkpoint format: the linear layers' weights (not embeddings, head, norms or
    the router; ``fp8.default_checkpoint_include``) as float8_e4m3fn with a ``weight_scale_inv`` fp32 multiplier per
    128×128 block, the rest in ``dtype`` (default: as stored), and ``quantization_config`` in config.json.
    """
    from ..fp8 import quantize_state_dict

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    hub = to_hub_state_dict(model)
    limit = _parse_size(max_shard_size)
    tensors = {}
    for k, v in hub.items():
        v = v.detach()
        if dtype is not None and v.is_floating_point() and not k.endswith("e_score_correction_bias"):
            v = v.to(dtype)
        tensors[k] = v.to("cpu").contiguous()
    if fp8:
        tensors = {k: v.contiguous() for k, v in quantize_state_dict(tensors).items()}
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for k in sorted(tensors):
        nbytes = tensors[k].numel() * tensors[k].element_size()
        if shards[-1] and size + nbytes > limit:
            shards.append({})
            size = 0
        shards[-1][k] = tensors[k]
        size += nbytes
    names = (["model.safetensors"] if len(shards) == 1 else
             [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))])
    for old in directory.glob("model*.safetensors*"):
        if old.name not in names:
            old.unlink()
    weight_map = {}
    for name, shard in zip(names, shards):
        tmp = directory / (name + ".tmp")
        save_file(_dedupe_storage(shard), str(tmp), metadata={"format": "pt"})
        os.replace(tmp, directory / name)
        weight_map.update({k: name for k in shard})
    if len(shards) > 1:
        total = sum(t.numel() * t.element_size() for t in tensors.values())
        index = {"metadata": {"total_size": total}, "weight_map": weight_map}
        tmp = directory / "model.safetensors.index.json.tmp"
        tmp.write_text(json.dumps(index, indent=2, sort_keys=True))
        os.replace(tmp, directory / "model.safetensors.index.json")
    config = model.config
    if dtype is not None:
        config = config.replace(dtype=str(dtype).replace("torch.", ""))
    config = config.replace(quantization_config=dict(FP8_QUANTIZATION_CONFIG) if fp8 else None)
    config.save_pretrained(directory)
    return directory


def _dedupe_storage(shard: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """safetensors refuses tensors sharing memory (the MTP copies of embedding/head): clone repeats."""
    seen, out = set(), {}
    for k, v in shard.items():
        key = (v.untyped_storage().data_ptr(), v.storage_offset())
        out[k] = v.clone() if key in seen else v
        seen.add(key)
    return out


# ---------------------------------------------------------------------------------------------- load
def read_safetensors(directory: Path) -> dict[str, torch.Tensor]:
    index = directory / "model.safetensors.index.json"
    if index.is_file():
        files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
    else:
        files = sorted(p.name for p in directory.glob("*.safetensors"))
    if not files:
        raise CheckpointError(f"{directory}: no *.safetensors files")
    tensors = {}
    for name in files:
        with safe_open(str(directory / name), framework="pt") as f:
            for k in f.keys():
                tensors[k] = f.get_tensor(k)
    return tensors


def load_pretrained(directory: str | os.PathLike, dtype: torch.dtype | None = None, device="cpu",
                    config: DeepSeekV3Config | None = None, **overrides):
    """Build a DeepSeekV3ForCausalLM from an HF directory; ``overrides`` change config fields (e.g. moe_impl)."""
    from .transformer import DeepSeekV3ForCausalLM

    directory = Path(directory)
    config = config or DeepSeekV3Config.from_pretrained(directory)
    if overrides:
        config = config.replace(**overrides)
    hub = read_safetensors(directory)
    if any(k.endswith("weight_scale_inv") for k in hub):
        from ..fp8 import dequantize_state_dict
        hub = dequantize_state_dict(hub, dtype=dtype or _checkpoint_dtype(hub, skip_fp8=True))
    if config.quantization_config is not None:
        config = config.replace(quantization_config=None)  # the weights are dequantised now
    n_main = config.num_hidden_layers
    if config.num_nextn_predict_layers and not any(
            (m := _LAYER_RE.match(k)) and int(m.group(1)) >= n_main for k in hub):
        log.warning("%s: config.json says num_nextn_predict_layers=%d but the checkpoint has no MTP tensors "
                    "(transformers drops them); loading without MTP", directory, config.num_nextn_predict_layers)
        config = config.replace(num_nextn_predict_layers=0)
    expert_problems: dict[str, list[str]] = {}
    state = from_hub_state_dict(hub, config, problems=expert_problems)
    with torch.device("meta"):
        model = DeepSeekV3ForCausalLM(config, init_weights=False)
    expected = model.state_dict()
    if config.tie_word_embeddings:
        expected.pop("lm_head.weight", None)
    stacked = re.compile(r"^(.*\.mlp\.experts)\.(gate_up_proj|down_proj)$")
    problems = [line for bad in expert_problems.values() for line in bad]
    for k, v in expected.items():
        if k in state:
            continue
        m = stacked.match(k)
        if m is None:
            problems.append(f"missing: {hub_name(k, n_main)} {tuple(v.shape)}")
        elif m.group(1) not in expert_problems and m.group(2) == "gate_up_proj":  # no expert of the layer at all
            problems.append(f"missing: {hub_name(m.group(1), n_main)}.{{0..{config.n_routed_experts - 1}}}"
                            ".{gate_proj,up_proj,down_proj}.weight (every expert of the layer)")
    problems += [f"mis-shaped: {hub_name(k, n_main)} expected {tuple(expected[k].shape)} got {tuple(state[k].shape)}"
                 for k in expected if k in state and state[k].shape != expected[k].shape]
    problems += [f"unexpected: {hub_name(k, n_main)}" for k in state if k not in expected]
    if problems:
        raise CheckpointError(f"{directory}: checkpoint does not match config.json:\n  " + "\n  ".join(problems))
    model.to_empty(device=device)
    target_dtype = dtype or _checkpoint_dtype(state)
    model.to(target_dtype)
    model.load_state_dict(state, strict=False)
    if config.tie_word_embeddings:
        model.lm_head.weight = model.model.embed_tokens.weight
    _reset_nonpersistent_buffers(model, device)
    return model


def _checkpoint_dtype(state: dict[str, torch.Tensor], skip_fp8: bool = False) -> torch.dtype:
    """The dtype the checkpoint stores its weights in (skip_fp8: that of the tensors left unquantised, bf16 when
    every one is FP8 or fp32 scale)."""
    for k, v in state.items():
        if not v.is_floating_point() or k.endswith(("e_score_correction_bias", "weight_scale_inv")):
            continue
        if skip_fp8 and v.dtype == torch.float8_e4m3fn:
            continue
        return v.dtype
    return torch.bfloat16 if skip_fp8 else torch.float32


def _reset_nonpersistent_buffers(model, device) -> None:
    from .moe import MoE
    from .rope import inv_frequencies
    model.model.rotary.inv_freq = inv_frequencies(model.config)[0].to(device)
    for m in model.modules():
        if isinstance(m, MoE):
            m.tokens_per_expert = torch.zeros(m.gate.n_experts, device=device)
