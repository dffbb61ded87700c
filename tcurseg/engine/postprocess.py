"""Connected-component post-processing of a predicted label map: nnU-Net's "keep the largest component", per region
and with a number of components per region (two hippocampi are two components), on MONAI's
``get_largest_connected_component_mask``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np


def check_keep_components(keep: Mapping[str, int], regions: Sequence[str]) -> None:
    """Refuse, in one line, a region that is not one of ``regions`` or a count below 1 (no torch needed: the
    training config is checked with it before torch loads)."""
    unknown = sorted(set(keep) - set(regions))
    if unknown:
        raise ValueError(f"eval.keep_components names {unknown}, not regions of the data ({sorted(regions)}; "
                         "eval.keep_components=null keeps every component)")
    for region, count in keep.items():
        if int(count) < 1:
            raise ValueError(f"eval.keep_components.{region} must be >= 1, got {count}")


def keep_largest_components(pred: np.ndarray, regions: Mapping[str, Sequence[int]], keep: Mapping[str, int],
                            background: int = 0) -> np.ndarray:
    """A copy of the label map ``pred`` in which, for every region R named in ``keep`` (in the order given), the
    voxels of R outside its ``keep[R]`` largest connected components (26-connectivity) are set to ``background``.

    A region is the union of its label values (``regions[R]``), so a nested region (BraTS WT = {1, 2, 4}) removes
    every label inside a dropped component. An empty region stays empty."""
    from monai.transforms.utils import get_largest_connected_component_mask

    check_keep_components(keep, list(regions))
    out = np.array(pred, copy=True)
    for region, count in keep.items():
        mask = np.isin(out, list(regions[region]))
        if mask.any():
            kept = np.asarray(get_largest_connected_component_mask(mask, num_components=int(count)), dtype=bool)
            out[mask & ~kept] = background
    return out
