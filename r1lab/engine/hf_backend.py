"""The generic path: any local transformers causal LM (Qwen2, Llama, ...) behind the engine's API.

Correctness over speed: prompts are batched (up to ``max_batch_size`` sequences) with left padding, an attention mask
and positions that start at each row's first real token — what ``transformers.generate`` does — and decoded with the
model's own ``DynamicCache``; finished rows keep a pad token until the whole batch is done (static batching). Sampling,
stop conditions and the logprob definition (raw fp32 log-softmax at the sampled token) are shared with the DeepSeek
path (``sampler.py``, ``scheduler.py``).

Legend: B rows, T tokens, V vocab.
"""

from __future__ import annotations

import inspect

import torch

from .params import GenerationStats
from .sampler import RowNoise, RowParams, sample
from .scheduler import Sequence


class HFBackend:
    def __init__(self, model, device: torch.device, pad_id: int):
        self.model = model
        self.device = device
        self.pad_id = pad_id
        params = inspect.signature(type(model).forward).parameters
        # transformers >= 5.2x names the cache argument ``cache``; earlier versions ``past_key_values``
        self._cache_arg = "cache" if "cache" in params else "past_key_values"
        self._keep_arg = "logits_to_keep" in params

    def _forward(self, ids_BT, mask_BT, pos_BT, past):
        kwargs = {"input_ids": ids_BT, "attention_mask": mask_BT, "position_ids": pos_BT, self._cache_arg: past,
                  "use_cache": True}
        if self._keep_arg:
            kwargs["logits_to_keep"] = 1
        out = self.model(**kwargs)
        past = getattr(out, "cache", None) if self._cache_arg == "cache" else None
        return out.logits[:, -1].float(), past if past is not None else out.past_key_values

    @torch.no_grad()
    def run(self, seqs: list[Sequence], decode, max_batch: int, generator: torch.Generator,
            stats: GenerationStats, bar=None) -> None:
        for i in range(0, len(seqs), max_batch):
            self._run_batch(seqs[i: i + max_batch], decode, generator, stats)
            if bar is not None:
                bar.update(len(seqs[i: i + max_batch]))

    def _run_batch(self, seqs: list[Sequence], decode, generator: torch.Generator, stats: GenerationStats) -> None:
        dev = self.device
        b = len(seqs)
        t = max(len(s.prompt_ids) for s in seqs)
        ids_BT = torch.full((b, t), self.pad_id, dtype=torch.long, device=dev)
        mask_BT = torch.zeros(b, t, dtype=torch.long, device=dev)
        for r, s in enumerate(seqs):
            n = len(s.prompt_ids)
            ids_BT[r, t - n:] = torch.tensor(s.prompt_ids, device=dev)
            mask_BT[r, t - n:] = 1
        pos_BT = (mask_BT.cumsum(-1) - 1).clamp_min(0)
        ps = [s.params for s in seqs]
        rp = RowParams([p.temperature for p in ps], [p.top_k for p in ps], [p.top_p for p in ps],
                       [p.min_p for p in ps], dev)
        noise = RowNoise([s.generator for s in seqs], generator, dev)
        logits_BV, past = self._forward(ids_BT, mask_BT, pos_BT, None)
        next_pos_B = pos_BT[:, -1] + 1
        while True:
            tok_B, lp_B = sample(logits_BV, rp, noise)
            host = torch.stack([tok_B.float(), lp_B], dim=1).tolist()
            for s, (tok, lp) in zip(seqs, host):
                if not s.finished:
                    s.append(int(tok), lp, decode)
            stats.steps += 1
            if all(s.finished for s in seqs):
                return
            alive_B = torch.tensor([not s.finished for s in seqs], device=dev)
            feed_B = torch.where(alive_B, tok_B, torch.full_like(tok_B, self.pad_id))
            mask_BT = torch.cat([mask_BT, alive_B.long()[:, None]], dim=1)
            logits_BV, past = self._forward(feed_B[:, None], mask_BT, next_pos_B[:, None], past)
            next_pos_B = next_pos_B + 1
