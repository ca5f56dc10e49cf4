"""SpecAugment widths relative to the clip (floats in (0, 1)) or absolute (ints), as the DataModule passes them."""

import pytest
import torch

from datamodules.transforms import SpecAugment, mask_width


def test_mask_width_absolute_or_fraction():
    assert mask_width(48, 1024) == 48 and mask_width(0, 100) == 0
    assert mask_width(0.1875, 1024) == 192 and mask_width(0.1, 128) == 13 and mask_width(1.0, 50) == 1
    for bad in (-1, 1.5):
        with pytest.raises(ValueError, match="fraction"):
            mask_width(bad, 10)


@pytest.mark.parametrize("frames", [40, 400])
def test_relative_time_mask_scales_with_the_clip(frames):
    aug = SpecAugment(freq_mask=0.25, time_mask=0.1)
    assert aug.widths(frames, 64) == (16, frames // 10)
    out, _ = aug(torch.ones(64, frames, 64))
    for e in out:
        zero_t = (e == 0).all(1).sum().item()  # fully masked frames
        zero_f = (e == 0).all(0).sum().item()  # fully masked bins
        assert zero_t < frames // 10 and zero_f < 16
    assert (out == 0).any()


def test_disabled_masks_pass_through():
    x = torch.randn(2, 10, 8)
    out, y = SpecAugment(0, 0.0)(x, "y")
    assert out is x and y == "y"
