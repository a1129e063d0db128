"""DeepSeek-V3 model configuration, field-compatible with transformers' ``DeepseekV3Config``.

Field names are those of ``transformers.DeepseekV3Config`` (and of the hub's ``config.json`` with
``model_type: deepseek_v3``), so a config.json written here loads there and the reverse. Deliberate additions, all
optional and ignored by transformers: ``scoring_func`` (``"sigmoid"`` as V3, or ``"softmax"`` as V2),
``moe_impl`` (``"grouped"`` fast path or ``"loop"`` reference path), ``mtp_loss_weight`` (λ, V3 report §2.2) and
``aux_loss_alpha`` (α of the complementary sequence-wise balance loss, V3 report eq. 17-20; the key of that name in
DeepSeek's own config.json says 0.001 where the report says 0.0001, and the trainers take a file's value).

Defaults are transformers' defaults (the 671B shapes, plain RoPE, 4,096 positions), so a config.json that leaves a key
out — or writes ``"rope_scaling": null`` as transformers 4 does without scaling — means the same model in both
libraries.

RoPE scaling: transformers 4 wrote ``rope_scaling`` (with ``type`` or ``rope_type``) plus a top-level ``rope_theta``;
transformers 5 writes ``rope_parameters`` (with ``rope_type`` and ``rope_theta`` inside). Both are read; we keep the
transformers-5 form internally and write both forms so that either library version reads our files.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PRESETS_DIR = Path(__file__).resolve().parent.parent / "presets"


class ConfigError(ValueError):
    """An inconsistent or unreadable model configuration; the message names the field."""


@dataclass
class DeepSeekV3Config:
    """Hyper-parameters of a DeepSeek-V3 model. Defaults are the released 671B model (config_671B.json)."""

    vocab_size: int = 129280
    """Number of token ids (embedding rows and output-head columns)."""
    hidden_size: int = 7168
    """Model width d."""
    intermediate_size: int = 18432
    """Hidden width of the dense SwiGLU FFN in the first ``first_k_dense_replace`` layers."""
    moe_intermediate_size: int = 2048
    """Hidden width of each routed (and each shared) expert."""
    num_hidden_layers: int = 61
    """Number of transformer blocks of the main model (MTP modules are counted apart)."""
    num_attention_heads: int = 128
    """Number of attention heads n_h."""
    num_key_value_heads: int | None = None
    """Kept for transformers compatibility only; MLA has no KV-head grouping (None means = num_attention_heads)."""
    q_lora_rank: int | None = 1536
    """Rank of the low-rank query compression d_c'; None means a direct W_Q (V2-Lite style)."""
    kv_lora_rank: int = 512
    """Rank of the joint KV compression d_c: the latent that the decode cache holds."""
    qk_nope_head_dim: int = 128
    """Per-head query/key dims without position encoding."""
    qk_rope_head_dim: int = 64
    """Per-head dims of the decoupled RoPE query, and of the single shared RoPE key."""
    v_head_dim: int = 128
    """Per-head value dims."""
    n_routed_experts: int = 256
    """Number of routed experts per MoE layer N_r."""
    n_shared_experts: int = 1
    """Number of shared experts N_s (they always run; fused into one FFN of width N_s × moe_intermediate_size)."""
    num_experts_per_tok: int = 8
    """Routed experts chosen per token K_r."""
    n_group: int = 8
    """Expert groups for group-limited routing (V3: 8 groups, one per node)."""
    topk_group: int = 4
    """Groups kept per token (V3: at most 4 nodes per token)."""
    routed_scaling_factor: float = 2.5
    """Scale applied to the normalised routing weights."""
    norm_topk_prob: bool = True
    """Normalise the chosen experts' (unbiased) scores to sum to 1 before scaling."""
    scoring_func: str = "sigmoid"
    """Router score function: ``"sigmoid"`` (V3) or ``"softmax"`` (V2). transformers supports sigmoid only."""
    first_k_dense_replace: int = 3
    """The first k layers use a dense FFN; the rest are MoE."""
    num_nextn_predict_layers: int = 1
    """Number D of sequential multi-token-prediction modules (0 disables MTP)."""
    hidden_act: str = "silu"
    """Activation of the SwiGLU FFNs (only silu is supported)."""
    max_position_embeddings: int = 4096
    """Longest context the model is configured for (after YaRN extension; DeepSeek-V3: 163,840)."""
    rope_theta: float = 10000.0
    """RoPE base."""
    rope_parameters: dict[str, Any] | None = None
    """RoPE scaling in transformers-5 form (``rope_type`` "default" or "yarn", factor, original_max_position_embeddings,
    beta_fast, beta_slow, mscale, mscale_all_dim); None = plain RoPE (DeepSeek-V3: yarn, factor 40, original 4,096,
    mscale 1, mscale_all_dim 1). The legacy ``rope_scaling`` key is accepted on load."""
    rope_interleave: bool = True
    """RoPE dims are stored as interleaved pairs (x0,x1),(x2,x3)… as in DeepSeek checkpoints (only True supported)."""
    rms_norm_eps: float = 1e-6
    """Epsilon of every RMSNorm."""
    initializer_range: float = 0.02
    """Std of the normal initialisation of linear and embedding weights."""
    tie_word_embeddings: bool = False
    """Share the input embedding with the output head."""
    attention_bias: bool = False
    """Bias on the attention projections (False in every DeepSeek release; only False supported)."""
    attention_dropout: float = 0.0
    """Kept for compatibility; r1lab trains without attention dropout."""
    bos_token_id: int | None = 0
    """Id of the beginning-of-sentence token."""
    eos_token_id: int | list[int] | None = 1
    """Id(s) of the end-of-sentence token."""
    pad_token_id: int | None = None
    """Id of the padding token (None: none)."""
    moe_impl: str = "grouped"
    """Routed-expert implementation: ``"grouped"`` (tokens sorted by expert, one grouped GEMM) or ``"loop"``."""
    mtp_loss_weight: float = 0.3
    """λ: weight of the MTP loss (V3: 0.3 for the first 10T tokens, then 0.1). Used by the trainers."""
    aux_loss_alpha: float = 1e-4
    """α: weight of the complementary sequence-wise balance loss (V3 report: 0.0001; DeepSeek's released config.json
    says 0.001). Used by the trainers unless ``--balance-alpha`` is given."""
    dtype: str | None = None
    """Storage dtype written by save_pretrained (informational, as transformers' ``dtype``)."""
    quantization_config: dict[str, Any] | None = None
    """Set in the config.json of an FP8 checkpoint (``save_pretrained(..., fp8=True)``), as DeepSeek's release writes
    it: ``{"quant_method": "fp8", "fmt": "e4m3", "activation_scheme": "dynamic", "weight_block_size": [128, 128]}``.
    Loading dequantises such a checkpoint and drops it; None (not written) otherwise."""

    # ------------------------------------------------------------------ validation and derived values
    def __post_init__(self) -> None:
        if self.num_key_value_heads is None:
            self.num_key_value_heads = self.num_attention_heads
        if self.rope_parameters is None:
            self.rope_parameters = {"rope_type": "default"}
        self.rope_parameters = _normalise_rope(dict(self.rope_parameters), self)
        self.validate()

    def validate(self) -> None:
        """Raise ConfigError naming the first inconsistent field."""
        positive = ["vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "kv_lora_rank",
                    "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim", "intermediate_size",
                    "max_position_embeddings"]
        non_negative = ["n_routed_experts", "n_shared_experts", "num_experts_per_tok", "n_group", "topk_group",
                        "moe_intermediate_size", "first_k_dense_replace", "num_nextn_predict_layers"]
        for names, low in ((positive, 1), (non_negative, 0)):
            for name in names:
                value = getattr(self, name)
                if not isinstance(value, int) or isinstance(value, bool) or value < low:
                    kind = "a positive integer" if low else "an integer >= 0"
                    raise ConfigError(f"{name} must be {kind}, got {value!r}")
        for name, strict in (("rms_norm_eps", True), ("routed_scaling_factor", True), ("rope_theta", True),
                             ("initializer_range", False), ("mtp_loss_weight", False), ("aux_loss_alpha", False)):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not (value > 0 if strict else
                                                                                    value >= 0):
                raise ConfigError(f"{name} must be a {'positive' if strict else 'non-negative'} number, got {value!r}")
        if self.q_lora_rank is not None and (not isinstance(self.q_lora_rank, int) or self.q_lora_rank <= 0):
            raise ConfigError(f"q_lora_rank must be a positive integer or null, got {self.q_lora_rank!r}")
        if self.qk_rope_head_dim % 2:
            raise ConfigError(f"qk_rope_head_dim must be even (RoPE rotates pairs), got {self.qk_rope_head_dim}")
        if not 0 <= self.first_k_dense_replace <= self.num_hidden_layers:
            raise ConfigError(f"first_k_dense_replace must be in [0, num_hidden_layers], got {self.first_k_dense_replace}")
        if self.num_nextn_predict_layers < 0:
            raise ConfigError(f"num_nextn_predict_layers must be >= 0, got {self.num_nextn_predict_layers}")
        if self.has_moe:
            if self.moe_intermediate_size <= 0:
                raise ConfigError("moe_intermediate_size must be positive when MoE layers exist")
            if not 1 <= self.num_experts_per_tok <= self.n_routed_experts:
                raise ConfigError(f"num_experts_per_tok ({self.num_experts_per_tok}) must be in [1, n_routed_experts "
                                  f"({self.n_routed_experts})]")
            if self.n_group <= 0 or self.n_routed_experts % self.n_group:
                raise ConfigError(f"n_routed_experts ({self.n_routed_experts}) must be divisible by n_group "
                                  f"({self.n_group})")
            if not 1 <= self.topk_group <= self.n_group:
                raise ConfigError(f"topk_group ({self.topk_group}) must be in [1, n_group ({self.n_group})]")
            per_group = self.n_routed_experts // self.n_group
            if self.n_group > 1 and per_group < 2:
                raise ConfigError(f"n_group ({self.n_group}) leaves fewer than 2 experts per group "
                                  "(group scores sum the top-2 experts of each group)")
            if self.topk_group * per_group < self.num_experts_per_tok:
                raise ConfigError(f"topk_group ({self.topk_group}) groups of {per_group} experts cannot hold "
                                  f"num_experts_per_tok ({self.num_experts_per_tok}) experts")
        if self.scoring_func not in ("sigmoid", "softmax"):
            raise ConfigError(f"scoring_func must be 'sigmoid' or 'softmax', got {self.scoring_func!r}")
        if self.moe_impl not in ("grouped", "loop"):
            raise ConfigError(f"moe_impl must be 'grouped' or 'loop', got {self.moe_impl!r}")
        if self.hidden_act != "silu":
            raise ConfigError(f"hidden_act must be 'silu', got {self.hidden_act!r}")
        if not self.rope_interleave:
            raise ConfigError("rope_interleave=False is not supported: DeepSeek checkpoints store interleaved pairs")
        if self.attention_bias:
            raise ConfigError("attention_bias=True is not supported (no DeepSeek release uses it)")
        rtype = self.rope_parameters.get("rope_type")
        if rtype not in ("default", "yarn"):
            raise ConfigError(f"rope_parameters.rope_type must be 'default' or 'yarn', got {rtype!r}")
        if rtype == "yarn" and float(self.rope_parameters.get("factor", 0)) < 1.0:
            raise ConfigError("rope_parameters.factor must be >= 1 for yarn")

    @property
    def has_moe(self) -> bool:
        """Some block (main or MTP) has a MoE FFN; a config with n_routed_experts = 0 is fully dense."""
        n_blocks = self.num_hidden_layers + self.num_nextn_predict_layers
        return self.n_routed_experts > 0 and self.first_k_dense_replace < n_blocks

    @property
    def qk_head_dim(self) -> int:
        return self.qk_nope_head_dim + self.qk_rope_head_dim

    def is_moe_layer(self, layer_idx: int) -> bool:
        """Layer ``layer_idx`` (MTP blocks continue the numbering after the main layers) has a MoE FFN."""
        return layer_idx >= self.first_k_dense_replace and self.n_routed_experts > 0

    # ------------------------------------------------------------------ (de)serialisation
    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "<dict>") -> "DeepSeekV3Config":
        """Build from an HF-style dict; unknown keys are ignored, ``model_type`` must be ``deepseek_v3``."""
        data = dict(data)
        model_type = data.pop("model_type", "deepseek_v3")
        if model_type != "deepseek_v3":
            raise ConfigError(f"{source}: model_type must be 'deepseek_v3', got {model_type!r}")
        if "rope_scaling" in data and data["rope_scaling"] and not data.get("rope_parameters"):
            data["rope_parameters"] = dict(data["rope_scaling"])
        if "num_mtp_layers" in data and "num_nextn_predict_layers" not in data:
            data["num_nextn_predict_layers"] = data["num_mtp_layers"]
        rope = data.get("rope_parameters")
        if isinstance(rope, dict) and "rope_theta" in rope:
            data.setdefault("rope_theta", rope["rope_theta"])
        if "torch_dtype" in data and "dtype" not in data:
            data["dtype"] = data["torch_dtype"]
        names = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in names}
        try:
            return cls(**kwargs)
        except ConfigError as err:
            raise ConfigError(f"{source}: {err}") from None
        except TypeError as err:
            raise ConfigError(f"{source}: {err}") from None

    def to_dict(self) -> dict[str, Any]:
        """HF-style dict (both rope forms written) that transformers' DeepseekV3Config accepts."""
        out = dataclasses.asdict(self)
        out["model_type"] = "deepseek_v3"
        out["architectures"] = ["DeepseekV3ForCausalLM"]
        rope = dict(self.rope_parameters)
        rope["rope_theta"] = self.rope_theta
        out["rope_parameters"] = rope
        out["rope_scaling"] = None if rope["rope_type"] == "default" else {k: v for k, v in rope.items()
                                                                           if k != "rope_theta"}
        out["num_mtp_layers"] = self.num_nextn_predict_layers
        out["qk_head_dim"] = self.qk_head_dim
        out["head_dim"] = self.qk_rope_head_dim
        if out["quantization_config"] is None:  # transformers reads the key's presence as "quantized"
            del out["quantization_config"]
        return out

    @classmethod
    def from_json_file(cls, path: str | os.PathLike) -> "DeepSeekV3Config":
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"{path}: no such file") from None
        except json.JSONDecodeError as err:
            raise ConfigError(f"{path}:{err.lineno}: invalid JSON ({err.msg})") from None
        return cls.from_dict(data, source=str(path))

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike) -> "DeepSeekV3Config":
        """Read ``config.json`` from a directory (or a config.json path), or a preset name."""
        path = Path(path)
        if path.is_dir():
            return cls.from_json_file(path / "config.json")
        if path.suffix == ".json":
            return cls.from_json_file(path)
        if str(path) in list_presets():
            return cls.from_preset(str(path))
        raise ConfigError(f"{path}: no such model directory (and not a preset: {', '.join(list_presets())})")

    @classmethod
    def from_preset(cls, name: str) -> "DeepSeekV3Config":
        """One of the shipped presets (``list_presets()``)."""
        file = PRESETS_DIR / name / "config.json"
        if not file.is_file():
            raise ConfigError(f"unknown preset {name!r}; known presets: {', '.join(list_presets())}")
        return cls.from_json_file(file)

    def save_pretrained(self, directory: str | os.PathLike) -> Path:
        """Write ``config.json`` atomically into ``directory``."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        target = directory / "config.json"
        tmp = target.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n", encoding="utf-8")
        os.replace(tmp, target)
        return target

    def replace(self, **changes: Any) -> "DeepSeekV3Config":
        """A validated copy with some fields changed (``--key value`` overrides use this)."""
        return dataclasses.replace(self, **changes)


def list_presets() -> list[str]:
    return sorted(p.parent.name for p in PRESETS_DIR.glob("*/config.json"))


def _normalise_rope(rope: dict[str, Any], cfg: DeepSeekV3Config) -> dict[str, Any]:
    """Accept both the legacy (``type``) and transformers-5 (``rope_type``) spellings; fill YaRN defaults."""
    rtype = rope.pop("type", None)
    rope.setdefault("rope_type", rtype or "default")
    if "rope_theta" in rope:
        cfg.rope_theta = float(rope.pop("rope_theta"))
    if rope["rope_type"] == "yarn":
        rope.setdefault("original_max_position_embeddings", cfg.max_position_embeddings)
        if rope.get("factor") is None:
            rope["factor"] = cfg.max_position_embeddings / rope["original_max_position_embeddings"]
        rope.setdefault("beta_fast", 32.0)
        rope.setdefault("beta_slow", 1.0)
    return rope
