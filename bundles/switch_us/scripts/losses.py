# Copyright (c) 2026 ssl-monai-bundles contributors
# SPDX-License-Identifier: Apache-2.0
"""Losses of Switch, BCP and the supervised baseline (docs/methods.md 1.4 and 1.6; the supervised loss: 3.1).

All losses take logits and compute in float32, so they are safe under bf16/fp16 autocast.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["logit_consistency", "masked_dice_ce", "mixed_dice_ce", "pixel_info_nce"]


def masked_dice_ce(
    logits: torch.Tensor,
    target: torch.Tensor,
    mask: torch.Tensor | None = None,
    eps: float = 1e-10,
    softmax: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Soft Dice and cross-entropy restricted to a region.

    Dice is ``mean_c 1 - (2 sum P_c 1[y=c] m + eps) / (sum P_c m + sum 1[y=c] m + eps)`` over all classes,
    background included, with sums over the whole batch. Cross-entropy is ``sum(CE m) / sum(m)``.

    Args:
        logits: ``(B, C, *spatial)`` class logits.
        target: ``(B, *spatial)`` integer class map.
        mask: ``(B, *spatial)`` (or broadcastable) region weight in {0, 1}; None = everywhere.
        eps: smoothing term of the Dice ratio.
        softmax: ``P`` is the softmax of ``logits`` (default). False puts the raw logits in place of ``P``, as
            the Switch reference's supervised baseline (``train_single.py``) calls its Dice without softmax
            (docs/methods.md 3.3); kept only to reproduce that baseline.

    Returns:
        ``(dice_loss, ce_loss)`` as scalar tensors.
    """
    logits = logits.float()
    target = target.long()
    num_classes = logits.shape[1]
    m = torch.ones_like(target, dtype=torch.float32) if mask is None else mask.float().expand_as(target)
    prob = torch.softmax(logits, dim=1) if softmax else logits
    onehot = F.one_hot(target, num_classes).movedim(-1, 1).float()
    mc = m.unsqueeze(1)
    dims = [0, *range(2, logits.ndim)]
    inter = (prob * onehot * mc).sum(dims)
    denom = (prob * mc).sum(dims) + (onehot * mc).sum(dims)
    dice = (1.0 - (2.0 * inter + eps) / (denom + eps)).mean()
    ce = F.cross_entropy(logits, target, reduction="none")
    ce = (ce * m).sum() / m.sum().clamp_min(eps)
    return dice, ce


def mixed_dice_ce(
    logits: torch.Tensor,
    target_base: torch.Tensor,
    target_patch: torch.Tensor,
    base_mask: torch.Tensor,
    weight_base: float = 1.0,
    weight_patch: float = 0.5,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Region-weighted Dice and CE of a mixed image (the Switch ``mixloss``).

    The base region (``base_mask`` True) is scored against ``target_base`` with weight ``weight_base`` and
    the pasted patch region against ``target_patch`` with ``weight_patch`` (1.0 for ground truth, 0.5 for
    pseudo-labels in the published setting).

    Returns:
        ``(dice, ce)``: the weighted sums of the two regions' terms.
    """
    m = base_mask.float()
    d_base, c_base = masked_dice_ce(logits, target_base, m)
    d_patch, c_patch = masked_dice_ce(logits, target_patch, 1.0 - m)
    return weight_base * d_base + weight_patch * d_patch, weight_base * c_base + weight_patch * c_patch


class _PixelInfoNCE(torch.autograd.Function):
    """Mean over ``B * N`` rows of ``logsumexp_j(q_i . k_j) - q_i . k_i``, gradient for ``q`` only.

    The ``(B, N, N)`` logit tensor (4096 x 4096 per image at the published size) is never stored: rows are
    processed in chunks in the forward pass (keeping only the log-sum-exp) and recomputed in the backward
    pass. ``q`` and ``k`` are unit vectors with ``q`` scaled by ``1 / tau``, so every logit lies in
    ``[-bound, bound]`` with ``bound = 1 / tau`` and the log-sum-exp needs no running maximum:
    ``lse = bound + log(sum_j exp(l_j - bound))`` cannot overflow. The shifts (``-bound`` forward, ``-lse_i``
    backward) ride in the matrix product as one extra column, ``[q_i, -c_i] . [k_j, 1] = q_i . k_j - c_i``, so
    each chunk costs one ``bmm`` and one in-place ``exp`` (a broadcast ``baddbmm`` input would be copied into the
    whole chunk first). This makes the loss several times faster and smaller on CPU than a plain cross-entropy.
    """

    @staticmethod
    def forward(ctx, q: torch.Tensor, k: torch.Tensor, bound: float, chunk: int) -> torch.Tensor:
        b, n, _ = q.shape
        lse = torch.empty((b, n), dtype=q.dtype, device=q.device)
        kt1 = _with_column(k, 1.0).transpose(1, 2)
        q1 = _with_column(q, -bound)
        for s in range(0, n, chunk):
            e = torch.bmm(q1[:, s : s + chunk], kt1).exp_()
            lse[:, s : s + chunk] = e.sum(-1).log_().add_(bound)
        pos = (q * k).sum(-1)
        ctx.save_for_backward(q, k, lse)
        ctx.chunk = chunk
        return (lse - pos).mean()

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        q, k, lse = ctx.saved_tensors
        b, n, _ = q.shape
        dq = torch.empty_like(q)
        kt1 = _with_column(k, 1.0).transpose(1, 2)
        q1 = torch.cat([q, -lse[..., None]], dim=-1)
        for s in range(0, n, ctx.chunk):
            p = torch.bmm(q1[:, s : s + ctx.chunk], kt1).exp_()
            dq[:, s : s + ctx.chunk] = torch.bmm(p, k)
        dq.sub_(k).mul_(grad / (b * n))
        return dq, None, None, None


def _with_column(x: torch.Tensor, value: float) -> torch.Tensor:
    """``x`` (``(B, N, D)``) with a last column of ``value`` appended: ``(B, N, D + 1)``."""
    return torch.cat([x, x.new_full((*x.shape[:-1], 1), value)], dim=-1)


def pixel_info_nce(query: torch.Tensor, key: torch.Tensor, temperature: float = 0.07, chunk: int = 512) -> torch.Tensor:
    """Same-location pixel InfoNCE within each image.

    Every location ``i`` of ``query`` has the key at the same location as its positive and the keys at all
    other locations of the same image as negatives. Vectors are L2-normalised; the loss is the
    cross-entropy ``-log softmax_j(q_i . k_j / tau)[i]`` averaged over ``B * H * W`` locations. ``key`` is
    detached (stop-gradient), as in the reference.

    Args:
        query: ``(B, D, H, W)`` embeddings.
        key: ``(B, D, H, W)`` embeddings of the other view.
        temperature: softmax temperature tau.
        chunk: rows of the similarity matrix processed at once (memory/speed trade-off only).
    """
    if query.shape != key.shape:
        raise ValueError(f"query and key shapes differ: {tuple(query.shape)} vs {tuple(key.shape)}.")
    b, d = query.shape[:2]
    q = F.normalize(query.reshape(b, d, -1).float(), dim=1).transpose(1, 2) / temperature
    k = F.normalize(key.detach().reshape(b, d, -1).float(), dim=1).transpose(1, 2).contiguous()
    return _PixelInfoNCE.apply(q.contiguous(), k, 1.0 / temperature, int(chunk))


def logit_consistency(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean squared difference of two logit maps; gradients flow to both."""
    return F.mse_loss(a.float(), b.float())
