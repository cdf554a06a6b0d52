# Copyright (c) 2026 ssl-monai-bundles contributors
# SPDX-License-Identifier: Apache-2.0
"""Losses of Chaitanya et al. 2023: the segmentation loss and the local (pixel-to-class-mean) contrastive loss.

ALGORITHMS.md 4.4. For a pair of images ``(x, x')`` (row ``p`` of set 1 with row ``p`` of set 2, the "inter"
pairing of the reference's ``local_loss_exp_no = 1``) with (pseudo-)labels and raw embeddings ``z``:

* ``mu_1^k`` / ``mu_2^k``: mean embedding of the pixels of class ``k`` in ``x`` / ``x'`` (means of the raw
  embeddings; the cosine normalises afterwards), for the foreground classes ``K = {1, ..., C-1}``;
* ``s(a, b) = cos(a, b) / tau`` with ``tau = 0.1``;
* for an anchor pixel ``u`` of foreground class ``c`` in ``x``:
  ``D(u) = sum_{k in K} exp s(z_u, mu_1^k) + sum_{k in K} exp s(z_u, mu_2^k)`` (the positives included) and
  ``l(u) = -log(exp s(z_u, mu_1^c) / D(u)) - log(exp s(z_u, mu_2^c) / D(u))``; symmetrically for anchors in ``x'``;
* background is never an anchor, a positive or a negative.

Anchors are ``num_anchors`` (reference 3) pixels per image and foreground class drawn uniformly with
replacement from the pixels of that class, or every pixel of the class (``num_anchors=None``, the expectation
of the sampled loss). A class absent from an image has no anchor and no mean there: its terms are left out of
every sum (no NaN); a class absent from both images of the pair drops out entirely.

Normalisation (the project's decision, ALGORITHMS.md section 0 and 4.7.2: normalised once): ``l`` is averaged
over the anchors of each (image, class) group, the group means are averaged over the groups that have anchors
(``divide_by="present"``, default) or summed and divided by ``2 (C - 1)`` (``divide_by="all"``, the
reference's fixed divisor ``2 * 3 * (C - 1)`` over 3 anchors), and the pair losses are averaged over the pairs.
``cumulative=True`` (with ``divide_by="all"`` and sampled anchors) reproduces the reference's bug of re-dividing
the running sum by ``2 * num_anchors * (C - 1)`` on every pair, which leaves essentially the last pair.

All losses compute in float32, so they are safe under bf16/fp16 autocast.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from monai.losses import DiceLoss
from torch import nn

__all__ = [
    "SEG_MODES",
    "JointLoss",
    "LocalContrastiveLoss",
    "SegmentationLoss",
    "anchor_weights",
    "class_mean_embeddings",
    "default_class_weights",
    "local_contrastive_loss",
    "sample_anchors",
    "to_onehot",
    "weighted_cross_entropy",
]

#: segmentation losses of the reference: ``dsc_loss`` 2 (default), 1 and 0
SEG_MODES = ("dice", "dice_fg", "wce")

_REFERENCE_CLASS_WEIGHTS = {
    2: (0.1, 0.9),
    3: (0.1, 0.45, 0.45),
    4: (0.1, 0.3, 0.3, 0.3),
    8: (0.09, 0.13, 0.13, 0.13, 0.13, 0.13, 0.13, 0.13),
}


def default_class_weights(num_classes: int) -> tuple[float, ...]:
    """The reference's weighted-CE class weights (2, 3, 4, 8 classes); otherwise 0.1 and ``0.9 / (C - 1)``."""
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}.")
    if num_classes in _REFERENCE_CLASS_WEIGHTS:
        return _REFERENCE_CLASS_WEIGHTS[num_classes]
    return (0.1,) + (0.9 / (num_classes - 1),) * (num_classes - 1)


def _index_labels(labels: torch.Tensor, spatial_ndim: int) -> torch.Tensor:
    """Integer labels ``(B, *spatial)`` from ``(B, *spatial)`` or ``(B, 1, *spatial)``."""
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise TypeError(f"index labels must be an integer tensor, got {labels.dtype}.")
    if labels.ndim == spatial_ndim + 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if labels.ndim != spatial_ndim + 1:
        raise ValueError(f"index labels must be (B, *spatial) or (B, 1, *spatial), got {tuple(labels.shape)}.")
    return labels.long()


def _check_range(labels: torch.Tensor, num_classes: int) -> None:
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise ValueError(
            f"label values must lie in [0, {num_classes - 1}], got [{int(labels.min())}, {int(labels.max())}]."
        )


def to_onehot(labels: torch.Tensor, num_classes: int, spatial_ndim: int = 2) -> torch.Tensor:
    """Float one-hot ``(B, C, *spatial)`` from index labels, or soft/one-hot float labels passed through.

    Float labels of shape ``(B, C, *spatial)`` (e.g. the reference's bilinearly warped one-hot masks) are
    returned as float32 unchanged.
    """
    if labels.is_floating_point():
        if labels.ndim != spatial_ndim + 2 or labels.shape[1] != num_classes:
            raise ValueError(f"float labels must be one-hot (B, {num_classes}, *spatial), got {tuple(labels.shape)}.")
        return labels.float()
    idx = _index_labels(labels, spatial_ndim)
    _check_range(idx, num_classes)
    return F.one_hot(idx, num_classes).movedim(-1, 1).float()


def weighted_cross_entropy(logits: torch.Tensor, target: torch.Tensor, class_weights: Sequence[float]) -> torch.Tensor:
    """The reference's weighted CE: ``mean_pixels( CE(pixel) * sum_c w_c y_c )`` (not divided by the weights).

    Args:
        logits: ``(B, C, *spatial)``.
        target: one-hot or soft labels ``(B, C, *spatial)`` (float).
        class_weights: one weight per class.
    """
    if len(class_weights) != logits.shape[1]:
        raise ValueError(f"{len(class_weights)} class weights for {logits.shape[1]} classes.")
    w = torch.as_tensor(class_weights, dtype=torch.float32, device=logits.device).view(1, -1, *[1] * (logits.ndim - 2))
    target = target.float()
    ce = -(target * F.log_softmax(logits.float(), dim=1)).sum(dim=1)
    return (ce * (target * w).sum(dim=1)).mean()


class SegmentationLoss(nn.Module):
    """Segmentation loss of the labelled slices (ALGORITHMS.md 4.4 step 1), reference ``dsc_loss``:

    * ``"dice"`` (2, default): ``1 - mean_{images, classes} 2 sum p y / (sum p + sum y + eps)`` with softmax
      ``p``, per-image and per-class sums over the pixels, background included, ``eps = 1e-10``;
    * ``"dice_fg"`` (1): the same over the foreground classes only;
    * ``"wce"`` (0): :func:`weighted_cross_entropy` with :func:`default_class_weights` unless given.

    The Dice parts are MONAI's :class:`~monai.losses.DiceLoss` (``softmax=True``, ``smooth_nr=0``,
    ``smooth_dr=eps``), which gives exactly this formula.

    Args:
        num_classes: classes including background.
        mode: one of :data:`SEG_MODES`.
        class_weights: weighted-CE weights (``"wce"`` only).
        eps: Dice denominator constant.
    """

    def __init__(
        self,
        num_classes: int,
        mode: str = "dice",
        class_weights: Sequence[float] | None = None,
        eps: float = 1e-10,
    ) -> None:
        super().__init__()
        if mode not in SEG_MODES:
            raise ValueError(f"mode must be one of {SEG_MODES}, got {mode!r}.")
        self.num_classes = int(num_classes)
        self.mode = mode
        weights = default_class_weights(self.num_classes) if class_weights is None else tuple(class_weights)
        if len(weights) != self.num_classes:
            raise ValueError(f"{len(weights)} class weights for {self.num_classes} classes.")
        self.class_weights = tuple(float(v) for v in weights)
        self.dice = DiceLoss(
            include_background=mode != "dice_fg", softmax=True, smooth_nr=0.0, smooth_dr=float(eps), reduction="mean"
        )

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Args: ``logits`` ``(B, C, *spatial)``; ``labels`` index ``(B, [1,] *spatial)`` or one-hot float."""
        if logits.shape[1] != self.num_classes:
            raise ValueError(f"logits have {logits.shape[1]} channels, expected {self.num_classes}.")
        target = to_onehot(labels, self.num_classes, logits.ndim - 2).to(logits.device)
        if target.shape != logits.shape:
            raise ValueError(f"logits and labels differ: {tuple(logits.shape)} vs {tuple(target.shape)}.")
        if self.mode == "wce":
            return weighted_cross_entropy(logits, target, self.class_weights)
        return self.dice(logits.float(), target)


def class_mean_embeddings(
    embeddings: torch.Tensor, labels: torch.Tensor, num_classes: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean raw embedding of every foreground class per image.

    Args:
        embeddings: ``(B, D, H, W)``.
        labels: index labels ``(B, H, W)`` in ``[0, num_classes)``.
        num_classes: classes including background (0).

    Returns:
        ``(means, counts)``: ``(B, C - 1, D)`` (zeros for an absent class) and the pixel counts ``(B, C - 1)``.
    """
    b, d = embeddings.shape[:2]
    onehot = F.one_hot(labels.reshape(b, -1), num_classes)[..., 1:].transpose(1, 2).float()  # (B, K, N)
    counts = onehot.sum(dim=-1)
    sums = onehot @ embeddings.float().reshape(b, d, -1).transpose(1, 2)  # (B, K, D)
    return sums / counts.clamp(min=1.0).unsqueeze(-1), counts


def sample_anchors(
    labels: torch.Tensor,
    num_classes: int,
    num_anchors: int = 3,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Draw ``num_anchors`` pixels per image and foreground class, uniformly with replacement.

    Args:
        labels: index labels ``(B, H, W)``.
        num_classes: classes including background; background (0) is never drawn.
        num_anchors: pixels per (image, class) (reference 3).
        generator: optional random generator (the draw runs on its device).

    Returns:
        Flat pixel indices ``(B, C - 1, num_anchors)`` (``h * W + w``), ``-1`` where the class is absent.
    """
    if num_anchors < 1:
        raise ValueError(f"num_anchors must be positive, got {num_anchors}.")
    labels = _index_labels(labels, 2)
    b = labels.shape[0]
    k = num_classes - 1
    device = generator.device if generator is not None else labels.device
    flat = labels.reshape(b, -1).to(device)
    classes = torch.arange(1, num_classes, device=device).view(1, k, 1)
    probs = (flat.unsqueeze(1) == classes).float().reshape(b * k, -1)  # (B*K, N)
    present = probs.sum(dim=-1) > 0
    probs[~present] = 1.0  # any valid distribution; those draws are replaced by -1
    idx = torch.multinomial(probs, num_anchors, replacement=True, generator=generator)
    idx[~present] = -1
    return idx.view(b, k, num_anchors).to(labels.device)


def anchor_weights(anchors: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Per-pixel weights ``(B, C - 1, H * W)``: how often each pixel is an anchor of a class, over the group size.

    Each (image, class) row sums to 1 when the class has at least one anchor, else to 0. Indices ``< 0`` are
    skipped; an index pointing at a pixel of another class raises a ``ValueError``.

    Args:
        anchors: flat pixel indices ``(B, C - 1, P)``, ``-1`` for none.
        labels: index labels ``(B, H, W)``.
        num_classes: classes including background.
    """
    b = labels.shape[0]
    k = num_classes - 1
    flat = labels.reshape(b, -1)
    n = flat.shape[1]
    if anchors.ndim != 3 or anchors.shape[:2] != (b, k):
        raise ValueError(f"anchors must be (B, C - 1, P) = ({b}, {k}, P), got {tuple(anchors.shape)}.")
    anchors = anchors.to(flat.device).long()
    valid = anchors >= 0
    if bool((anchors >= n).any()):
        raise ValueError(f"anchor indices must be < H * W = {n}.")
    safe = anchors.clamp(min=0)
    hit = flat.gather(1, safe.reshape(b, -1)).view_as(anchors)
    expected = torch.arange(1, num_classes, device=flat.device).view(1, k, 1)
    if bool((valid & (hit != expected)).any()):
        raise ValueError("an anchor index points at a pixel of another class.")
    counts = torch.zeros(b, k, n, device=flat.device)
    counts.scatter_add_(2, safe, valid.float())
    return counts / valid.sum(dim=-1, keepdim=True).clamp(min=1).float()


def local_contrastive_loss(
    emb1: torch.Tensor,
    emb2: torch.Tensor,
    labels1: torch.Tensor,
    labels2: torch.Tensor,
    num_classes: int,
    temperature: float = 0.1,
    num_anchors: int | None = 3,
    anchors: tuple[torch.Tensor, torch.Tensor] | None = None,
    generator: torch.Generator | None = None,
    divide_by: str = "present",
    cumulative: bool = False,
) -> torch.Tensor:
    """The local contrastive loss of a batch of pairs (row ``p`` of set 1 with row ``p`` of set 2).

    See the module docstring for the formula and the normalisation.

    Args:
        emb1: raw embeddings of set 1, ``(B, D, H, W)`` (the output of head h).
        emb2: raw embeddings of set 2, same shape.
        labels1: (pseudo-)labels of set 1, index ``(B, [1,] H, W)`` in ``[0, num_classes)``.
        labels2: (pseudo-)labels of set 2.
        num_classes: classes including background (0), ``C >= 2``.
        temperature: ``tau`` (reference 0.1).
        num_anchors: anchors drawn per image and foreground class (reference 3); ``None`` uses every pixel of
            the class (each class weighted equally).
        anchors: explicit anchors ``(anchors1, anchors2)``, each ``(B, C - 1, P)`` flat indices with ``-1`` for
            none (see :func:`sample_anchors`); overrides ``num_anchors`` sampling.
        generator: random generator for the anchor draw.
        divide_by: ``"present"`` averages over the (image, class) groups that have anchors (pairs without any
            are left out of the mean over pairs; no pair at all gives a zero attached to the graph);
            ``"all"`` divides every pair by ``2 (C - 1)`` as the reference (absent groups count as 0).
        cumulative: reproduce the reference's repeated division (needs ``divide_by="all"`` and sampled anchors).

    Returns:
        A scalar tensor.
    """
    if divide_by not in ("present", "all"):
        raise ValueError(f"divide_by must be 'present' or 'all', got {divide_by!r}.")
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}.")
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}.")
    if emb1.ndim != 4 or emb1.shape != emb2.shape:
        raise ValueError(f"emb1 and emb2 must both be (B, D, H, W), got {tuple(emb1.shape)} and {tuple(emb2.shape)}.")
    b, d, h, w = emb1.shape
    labs = []
    for lab in (labels1, labels2):
        lab = _index_labels(lab, 2).to(emb1.device)
        if lab.shape != (b, h, w):
            raise ValueError(f"labels must be ({b}, {h}, {w}) to match the embeddings, got {tuple(lab.shape)}.")
        _check_range(lab, num_classes)
        labs.append(lab)
    n_anchor_pixels = None
    if anchors is None and num_anchors is not None:
        n_anchor_pixels = int(num_anchors)
        anchors = tuple(sample_anchors(lab, num_classes, n_anchor_pixels, generator) for lab in labs)
    elif anchors is not None:
        n_anchor_pixels = int(anchors[0].shape[-1])
    if cumulative and (divide_by != "all" or n_anchor_pixels is None):
        raise ValueError("cumulative=True reproduces the reference only with divide_by='all' and sampled anchors.")

    k = num_classes - 1
    z = torch.stack([emb1, emb2]).float().reshape(2, b, d, h * w)  # (2, B, D, N)
    lab = torch.stack(labs).reshape(2, b, h * w)  # (2, B, N)
    means, counts = class_mean_embeddings(z.reshape(2 * b, d, h, w), lab.reshape(2 * b, h, w), num_classes)
    means, present = means.view(2, b, k, d), (counts > 0).view(2, b, k)
    if anchors is None:  # every pixel of a class, each class weighted equally
        onehot = F.one_hot(lab, num_classes)[..., 1:].transpose(-1, -2).float()  # (2, B, K, N)
        weights = onehot / onehot.sum(dim=-1, keepdim=True).clamp(min=1.0)
    else:
        weights = torch.stack(
            [anchor_weights(a, lb, num_classes) for a, lb in zip(anchors, lab.view(2, b, h, w))]
        )  # (2, B, K, N)
    has_group = weights.sum(dim=-1) > 0  # (2, B, K)

    z_n = F.normalize(z, dim=2)
    mu_n = F.normalize(means, dim=-1)
    s_own = torch.einsum("abdn,abkd->abnk", z_n, mu_n) / temperature  # (2, B, N, K)
    s_other = torch.einsum("abdn,abkd->abnk", z_n, mu_n.flip(0)) / temperature
    p_own, p_other = present.unsqueeze(2), present.flip(0).unsqueeze(2)  # (2, B, 1, K)
    logits = torch.cat([s_own.masked_fill(~p_own, float("-inf")), s_other.masked_fill(~p_other, float("-inf"))], -1)
    any_class = torch.cat([p_own, p_other], dim=-1).any(dim=-1, keepdim=True)  # images with no class: no anchors
    log_den = torch.logsumexp(torch.where(any_class, logits, torch.zeros_like(logits)), dim=-1)  # (2, B, N)

    cls = (lab - 1).clamp(min=0).unsqueeze(-1)  # the pixel's own class (background pixels carry no weight)
    pos_own = s_own.gather(-1, cls).squeeze(-1)
    pos_other = s_other.gather(-1, cls).squeeze(-1)
    other_ok = p_other.expand(2, b, h * w, k).gather(-1, cls).squeeze(-1)
    per_pixel = (log_den - pos_own) + torch.where(other_ok, log_den - pos_other, torch.zeros_like(log_den))
    group = (weights * per_pixel.unsqueeze(2)).sum(dim=-1)  # (2, B, K): mean over the anchors of each group
    pair_sum = group.sum(dim=(0, 2))  # (B,)

    if divide_by == "present":
        n_groups = has_group.sum(dim=(0, 2))
        ok = n_groups > 0
        if not bool(ok.any()):
            return z.sum() * 0.0
        return (pair_sum[ok] / n_groups[ok]).mean()
    pair_loss = pair_sum / (2 * k)
    if not cumulative:
        return pair_loss.mean()
    factor = float(2 * n_anchor_pixels * k)
    powers = torch.arange(b - 1, -1, -1, device=pair_loss.device, dtype=pair_loss.dtype)
    return (pair_loss * factor ** (-powers)).sum() / b


class LocalContrastiveLoss(nn.Module):
    """Module form of :func:`local_contrastive_loss` holding its settings.

    Args:
        num_classes: classes including background.
        temperature: ``tau`` (reference 0.1).
        num_anchors: anchors per image and foreground class (reference 3); ``None`` for every pixel.
        divide_by: ``"present"`` (default) or ``"all"`` (the reference's fixed divisor).
        cumulative: the reference's repeated division (off: the project's "normalised once").
    """

    def __init__(
        self,
        num_classes: int,
        temperature: float = 0.1,
        num_anchors: int | None = 3,
        divide_by: str = "present",
        cumulative: bool = False,
    ) -> None:
        super().__init__()
        if divide_by not in ("present", "all"):
            raise ValueError(f"divide_by must be 'present' or 'all', got {divide_by!r}.")
        if cumulative and (divide_by != "all" or num_anchors is None):
            raise ValueError("cumulative=True needs divide_by='all' and an integer num_anchors.")
        self.num_classes = int(num_classes)
        self.temperature = float(temperature)
        self.num_anchors = None if num_anchors is None else int(num_anchors)
        self.divide_by = divide_by
        self.cumulative = bool(cumulative)

    def forward(
        self,
        emb1: torch.Tensor,
        emb2: torch.Tensor,
        labels1: torch.Tensor,
        labels2: torch.Tensor,
        generator: torch.Generator | None = None,
        anchors: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        return local_contrastive_loss(
            emb1,
            emb2,
            labels1,
            labels2,
            self.num_classes,
            temperature=self.temperature,
            num_anchors=self.num_anchors,
            anchors=anchors,
            generator=generator,
            divide_by=self.divide_by,
            cumulative=self.cumulative,
        )

    def extra_repr(self) -> str:
        return (
            f"num_classes={self.num_classes}, temperature={self.temperature}, num_anchors={self.num_anchors}, "
            f"divide_by={self.divide_by!r}, cumulative={self.cumulative}"
        )


class JointLoss(nn.Module):
    """The joint objective ``L_seg + lambda * L_loc`` of the self-training step (ALGORITHMS.md 4.4 step 3).

    Args:
        num_classes: classes including background.
        lam: weight ``lambda`` of the local contrastive loss (reference 0.1).
        seg_mode: segmentation loss, one of :data:`SEG_MODES` (reference ``"dice"``).
        class_weights: weighted-CE class weights (``seg_mode="wce"``).
        temperature: contrastive temperature (reference 0.1).
        num_anchors: anchors per image and foreground class (reference 3); ``None`` for every pixel.
        divide_by: contrastive normalisation, ``"present"`` or ``"all"``.
        cumulative: the reference's repeated contrastive division.
    """

    def __init__(
        self,
        num_classes: int,
        lam: float = 0.1,
        seg_mode: str = "dice",
        class_weights: Sequence[float] | None = None,
        temperature: float = 0.1,
        num_anchors: int | None = 3,
        divide_by: str = "present",
        cumulative: bool = False,
    ) -> None:
        super().__init__()
        if lam < 0:
            raise ValueError(f"lam must be >= 0, got {lam}.")
        self.lam = float(lam)
        self.seg_loss = SegmentationLoss(num_classes, seg_mode, class_weights)
        self.local_loss = LocalContrastiveLoss(num_classes, temperature, num_anchors, divide_by, cumulative)

    def forward(
        self,
        seg_logits: torch.Tensor,
        seg_labels: torch.Tensor,
        emb1: torch.Tensor,
        emb2: torch.Tensor,
        labels1: torch.Tensor,
        labels2: torch.Tensor,
        generator: torch.Generator | None = None,
        anchors: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> dict[str, torch.Tensor]:
        """Compute the loss of one joint step.

        Args:
            seg_logits: logits of the labelled segmentation batch ``(B_s, C, H, W)``.
            seg_labels: its ground truth (index or one-hot float, e.g. after the deformation).
            emb1: embeddings of contrastive set 1 ``(B, D, H, W)``; ``emb2``: of set 2.
            labels1: (pseudo-)labels of set 1 ``(B, H, W)``; ``labels2``: of set 2.
            generator: random generator for the anchor draw.
            anchors: explicit anchors, see :func:`local_contrastive_loss`.

        Returns:
            ``loss`` (to back-propagate), ``seg``, ``loc`` and ``lam`` as tensors (the parts are attached to the
            graph; detach them for logging). The reference skips the update when ``loc`` is 0 or not finite.
        """
        seg = self.seg_loss(seg_logits, seg_labels)
        loc = self.local_loss(emb1, emb2, labels1, labels2, generator=generator, anchors=anchors)
        lam = torch.tensor(self.lam, dtype=torch.float32, device=seg.device)
        return {"loss": seg + lam * loc, "seg": seg, "loc": loc, "lam": lam}
