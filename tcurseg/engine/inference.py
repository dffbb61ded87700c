"""Whole-volume inference with MONAI's sliding window, on a model whose adapter is merged into its weights."""

from __future__ import annotations

import copy
import itertools
from collections.abc import Sequence

import torch
from monai.inferers import sliding_window_inference
from torch import nn


def merged_for_inference(model: nn.Module) -> nn.Module:
    """A copy of ``model`` in eval mode with its adapter folded into the weights (W0 + dW): the speed of the base
    network and the same output up to rounding. ``model`` itself is left as it is (unmerged, trainable)."""
    from tcurseg import peft
    from tcurseg.peft.api import ADAPTER_ATTR

    merged = copy.deepcopy(peft.unwrap(model))
    if hasattr(merged, ADAPTER_ATTR):  # a plain network has nothing to merge
        peft.merge(merged)
    return merged.eval()


def sliding_window_predict(
    model: nn.Module,
    image: torch.Tensor,
    roi_size: Sequence[int],
    overlap: float = 0.5,
    sw_batch_size: int = 1,
    dtype: torch.dtype | None = None,
    mirror_axes: Sequence[int] = (),
) -> torch.Tensor:
    """Logits (B, out_channels, D, H, W), float32, for an image (B, C, D, H, W) of any spatial size.

    Runs ``monai.inferers.sliding_window_inference`` with windows of ``roi_size`` overlapping by ``overlap``,
    under ``torch.no_grad()`` with the model in eval mode (its previous mode is restored), and under autocast to
    ``dtype`` on the image's device when it is given: the dtype the model was trained in
    (:func:`tcurseg.engine.runtime.amp_dtype`), never fp16 for a bf16 model, whose logits can overflow fp16. With ``mirror_axes`` (spatial axes, 0 = D) the
    logits are the mean over the image and its mirror images along every non-empty subset of those axes, each
    prediction flipped back (nnU-Net's test-time mirroring: 2^k passes for k axes).
    """
    if image.ndim != 5:
        raise ValueError(f"sliding_window_predict expects (B, C, D, H, W), got shape {tuple(image.shape)}")
    axes = sorted({int(a) for a in mirror_axes})
    if any(a not in (0, 1, 2) for a in axes):
        raise ValueError(f"mirror axes are spatial axes 0, 1, 2, got {list(mirror_axes)}")
    flips = [[2 + a for a in subset] for k in range(len(axes) + 1) for subset in itertools.combinations(axes, k)]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), torch.autocast(image.device.type, dtype=dtype or torch.float32,
                                                 enabled=dtype is not None):
            total = torch.zeros(())
            for dims in flips:
                logits = sliding_window_inference(
                    inputs=image.flip(dims) if dims else image,
                    roi_size=list(roi_size),
                    sw_batch_size=sw_batch_size,
                    predictor=model,
                    overlap=overlap,
                ).float()
                logits = logits.flip(dims) if dims else logits
                total = total + logits
    finally:
        model.train(was_training)
    return total / len(flips)
