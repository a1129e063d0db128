"""Speculative decoding with the MTP modules as the draft model (V3 report §2.2 and §5.4.3; the acceptance rule of
Leviathan et al. 2023 / Chen et al. 2023).

One round for a batch of sequences whose main cache holds positions 0..m and whose token t_{m+1} is sampled but not
yet processed:
1. Draft: depth j = 1..k runs MTP module min(j, D) at position m with h^{j-1}_m and Emb(t_{m+j}) (t_{m+1} the
   pending token, t_{m+1+i} = draft d_i), giving q_j and the draft d_j ~ q_j. Each depth first catches up the
   positions it has not processed validly yet (a window of at most k + 1 positions per row), so its own latent
   cache stays exactly what a sequential run would hold.
2. Verify: the main model processes [t_{m+1}, d_1..d_k] at positions m+1..m+1+k in one multi-token decode step over
   the latent cache (causal among the new tokens), giving p_1..p_{k+1}.
3. Accept d_i with probability min(1, p_i(d_i) / q_i(d_i)) while they are accepted; at the first rejection sample
   from normalise(max(0, p_i − q_i)); if all k are accepted sample a bonus token from p_{k+1}. The emitted tokens
   are distributed exactly as sampling from the target one token at a time; with greedy rows (one-hot p and q) this
   is "accept iff the draft equals the argmax", so the output equals plain greedy decoding.
4. Rollback: positions past the accepted ones are simply not advanced; each depth's count of valid positions is
   reset to what the accepted tokens justify: depth j at position p used t_{p+j}, valid iff that token was accepted.

With k > D (more drafts than MTP modules) the last module is reused for the deeper drafts (vLLM does the same); each
depth keeps its own cache. Host synchronisation: once per depth (none — drafts stay on device) plus once per round.

Legend: B rows, K drafts (k), V vocab.
"""

from __future__ import annotations

import torch

from .sampler import RowNoise, RowParams, processed_probs, sample_from_probs
from .scheduler import Sequence


def catch_up_prompt(runner, seqs: list[Sequence], k: int) -> None:
    """After a prefill: run depth j over prompt positions 0..L-1-j (their tokens t_{p+j} are in the prompt)."""
    device = runner.cache.tokens_SL.device
    slots_B = torch.tensor([s.slot for s in seqs], device=device)
    for s in seqs:
        s.draft_len = [0] * (k + 1)
    for j in range(1, k + 1):
        counts = [max(0, len(s.prompt_ids) - j) for s in seqs]
        if max(counts) == 0:
            continue
        w = max(counts)
        count_B = torch.tensor([max(c, 1) for c in counts], device=device)
        start_B = torch.zeros_like(count_B)
        runner.mtp_window(j, slots_B, start_B, count_B, w, runner.kv_bucket(w), eager=True)
        for s, c in zip(seqs, counts):
            s.draft_len[j] = c


@torch.no_grad()
def speculative_round(runner, seqs: list[Sequence], slots_B: torch.Tensor, rp: RowParams, noise: RowNoise,
                      k: int) -> tuple[list[list[int]], list[list[float]], list[int]]:
    """One draft-verify-accept round for ``seqs`` (padded to ``slots_B``'s length with scratch rows).

    Returns per row: the emitted tokens (accepted drafts + one), their raw logprobs, and the number of accepted
    drafts; the per-depth valid counts are already rolled forward. The caller appends the tokens (stop conditions
    may cut them short).
    """
    cache = runner.cache
    device = slots_B.device
    b = slots_B.shape[0]
    pad = b - len(seqs)
    m_list = [s.length - 2 for s in seqs] + [0] * pad  # last position already in the main cache
    m_B = torch.tensor(m_list, device=device)
    kv_draft = runner.kv_bucket(max(m_list) + 1)
    # write the pending token t_{m+1} (sampled last round) into the token buffer
    pending_B = torch.tensor([s.last_token() for s in seqs] + [0] * pad, device=device)
    cache.tokens_SL[slots_B, m_B + 1] = pending_B
    drafts, q_list = [], []
    for j in range(1, k + 1):
        start = [s.draft_len[j] for s in seqs] + [0] * pad
        start_B = torch.tensor(start, device=device)
        count_B = (m_B - start_B + 1).clamp_min(1)
        logits_BV = runner.mtp_window(j, slots_B, start_B, count_B, k + 1, kv_draft)
        q_BV = processed_probs(logits_BV, rp)
        d_B = sample_from_probs(q_BV, noise.uniform(1)[:, 0])
        cache.tokens_SL[slots_B, m_B + 1 + j] = d_B
        drafts.append(d_B)
        q_list.append(q_BV)
    d_BK = torch.stack(drafts, dim=1)
    q_BKV = torch.stack(q_list, dim=1)
    tokens_BT = torch.cat([pending_B[:, None], d_BK], dim=1)
    logits_BTV = runner.decode(tokens_BT, m_B + 1, slots_B, runner.kv_bucket(max(m_list) + k + 2))
    v = logits_BTV.shape[-1]
    p_BTV = processed_probs(logits_BTV.reshape(b * (k + 1), v), rp.repeat_interleave(k + 1)).view(b, k + 1, v)
    n_acc_B, final_B = accept(p_BTV, q_BKV, d_BK, noise)
    emitted_BT = torch.cat([d_BK, final_B[:, None]], dim=1)
    at_final = torch.arange(k + 1, device=device)[None] == n_acc_B[:, None]
    emitted_BT = torch.where(at_final, final_B[:, None], emitted_BT)
    lp_BT = torch.log_softmax(logits_BTV, dim=-1).gather(-1, emitted_BT[..., None]).squeeze(-1)
    host = torch.cat([n_acc_B[:, None].float(), emitted_BT.float(), lp_BT], dim=1)[: len(seqs)].tolist()
    toks, lps, n_acc = [], [], []
    for row in host:
        a = int(row[0])
        toks.append([int(x) for x in row[1: 2 + a]])
        lps.append(row[2 + k: 3 + k + a])
        n_acc.append(a)
    commit(seqs, m_list, n_acc, k)
    return toks, lps, n_acc


def accept(p_BTV: torch.Tensor, q_BKV: torch.Tensor, d_BK: torch.Tensor, noise: RowNoise):
    """The speculative-sampling rule. Returns (accepted draft count [B], the extra token [B]).

    p_BTV: target distributions at the k + 1 verified positions; q_BKV: draft distributions; d_BK: drafts.
    """
    b, k = d_BK.shape
    p_d = p_BTV[:, :k].gather(-1, d_BK[..., None]).squeeze(-1)
    q_d = q_BKV.gather(-1, d_BK[..., None]).squeeze(-1)
    u_BK = noise.uniform(k)
    accepted_BK = u_BK * q_d < p_d  # u < p/q without dividing; q(d) > 0 since d was drawn from q
    n_acc_B = accepted_BK.long().cumprod(dim=1).sum(dim=1)
    rows = torch.arange(b, device=d_BK.device)
    p_sel = p_BTV[rows, n_acc_B]
    q_ext = torch.cat([q_BKV, torch.zeros_like(q_BKV[:, :1])], dim=1)
    residual = (p_sel - q_ext[rows, n_acc_B]).clamp_min(0)
    total = residual.sum(-1, keepdim=True)
    residual = torch.where(total > 0, residual / total.clamp_min(1e-30), p_sel)
    final_B = sample_from_probs(residual, noise.uniform(1)[:, 0])
    return n_acc_B, final_B


def commit(seqs: list[Sequence], m_list: list[int], n_acc: list[int], k: int) -> None:
    """Roll the per-depth valid counts forward: depth j at position p is valid iff t_{p+j} was accepted, i.e.
    p + j ≤ m + 1 + n_acc; depth j computed positions up to m this round."""
    for s, m, a in zip(seqs, m_list, n_acc):
        for j in range(1, k + 1):
            s.draft_len[j] = min(m + 1, m + 2 + a - j)
