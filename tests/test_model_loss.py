"""The fused head + cross-entropy (``r1lab.model.loss``) against the reference F.cross_entropy over logits: values and
both gradients, chunked rows, ignored targets, no-grad evaluation, and the model's losses-only forward."""

import pytest
import torch
import torch.nn.functional as F

from r1lab.model import DeepSeekV3Config, DeepSeekV3ForCausalLM
from r1lab.model import loss as L


def _grads(fn, h0, w0):
    h, w = h0.clone().requires_grad_(), w0.clone().requires_grad_()
    out = fn(h, w)
    (out * 1.7).backward()  # a non-unit incoming gradient: the stored gradients must be scaled by it
    return out.detach(), h.grad, w.grad


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_linear_cross_entropy_equals_reference(reduction, monkeypatch):
    monkeypatch.setattr(L, "CHUNK_BYTES", 64 * 4 * 300)  # 64-row chunks: 203 rows take 4 of them, the last partial
    torch.manual_seed(0)
    n, d, v = 203, 24, 300
    h0, w0 = torch.randn(n, d), torch.randn(v, d) * 0.3
    target = torch.randint(0, v, (n,))
    target[::5] = -100
    ref = _grads(lambda h, w: F.cross_entropy(h @ w.t(), target, ignore_index=-100, reduction=reduction), h0, w0)
    fused = _grads(lambda h, w: L.linear_cross_entropy(h, w, target, reduction=reduction), h0, w0)
    for a, b in zip(ref, fused):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6)
    assert fused[1][::5].abs().max() == 0  # ignored rows get no gradient
    assert fused[1][1::5].abs().max() > 0


def test_all_targets_ignored_and_no_grad():
    torch.manual_seed(0)
    h0, w0 = torch.randn(7, 8), torch.randn(11, 8)
    none = torch.full((7,), -100)
    loss, gh, gw = _grads(lambda h, w: L.linear_cross_entropy(h, w, none), h0, w0)
    assert float(loss) == 0.0 and gh.abs().max() == 0 and gw.abs().max() == 0
    target = torch.randint(0, 11, (7,))
    with torch.no_grad():  # evaluation: the forward alone, the same value
        value = L.linear_cross_entropy(h0.clone().requires_grad_(), w0, target)
    assert torch.allclose(value, F.cross_entropy(h0 @ w0.t(), target), atol=1e-6)
    with pytest.raises(ValueError, match="reduction"):
        L.linear_cross_entropy(h0, w0, target, reduction="none")


def test_shifted_targets_stay_inside_documents():
    labels = torch.tensor([[5, 6, 7, 8, 9, -100]])
    segments = torch.tensor([[1, 1, 1, 2, 2, 0]])
    assert L.shifted_targets(labels, segments, 1).tolist() == [[6, 7, -100, 9, -100, -100]]
    assert L.shifted_targets(labels, segments, 2).tolist() == [[7, -100, -100, -100, -100, -100]]
    assert L.shifted_targets(labels, None, 9).tolist() == [[-100] * 6]


def test_model_losses_only_forward_equals_logits_forward():
    """return_logits=False (the CPU's fused head + CE, pretraining and SFT) vs the reference forward: the next-token
    and MTP losses and every parameter's gradient, on packed documents with two MTP depths."""
    torch.manual_seed(0)
    model = DeepSeekV3ForCausalLM(DeepSeekV3Config.from_preset("tiny").replace(num_nextn_predict_layers=2))
    ids = torch.randint(0, 256, (3, 40))
    doc_ids = torch.tensor([[1] * 15 + [2] * 25, [1] * 40, [1] * 30 + [0] * 10])
    labels = ids.clone()
    labels[:, :4] = -100  # a masked prompt

    def run(return_logits):
        model.zero_grad(set_to_none=True)
        out = model(ids, labels=labels, doc_ids=doc_ids, return_logits=return_logits)
        out.total_loss(0.3, 1e-2).backward()
        return out, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    ref, g_ref = run(True)
    fused, g_fused = run(False)
    assert fused.logits is None and ref.logits is not None
    torch.testing.assert_close(fused.loss, ref.loss, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(fused.mtp_loss, ref.mtp_loss, rtol=1e-5, atol=1e-6)
    assert g_fused.keys() == g_ref.keys() and "lm_head.weight" in g_fused
    for name in g_ref:
        torch.testing.assert_close(g_fused[name], g_ref[name], rtol=1e-4, atol=1e-6, msg=name)
    # mtp_loss=False: no MTP forward, no MTP loss, the next-token loss unchanged
    skip = model(ids, labels=labels, doc_ids=doc_ids, return_logits=False, mtp_loss=False)
    assert skip.mtp_loss is None
    torch.testing.assert_close(skip.loss, ref.loss, rtol=1e-5, atol=1e-6)
