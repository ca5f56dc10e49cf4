"""SpecAugment widths relative to the clip (floats in (0, 1)) or absolute (ints), as the DataModule passes them."""

import math

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


def _params(b, rate=1.0, shift=0.0, pitch=0.0, gain=0.0):
    return tuple(torch.full((b,), float(v), dtype=torch.float64) for v in (rate, shift, pitch, gain))


def test_spec_warp_identity_and_exact_shifts():
    """Each warp against its brute-force form: whole-bin / whole-frame shifts and rate 2 read the input cells
    they name, cells from outside the clip are 0, the gain adds g ln(10)/10 / sigma."""
    from datamodules.transforms import SpecWarp

    x, w = torch.randn(3, 40, 16, dtype=torch.float64), SpecWarp(0.25, 2, 0.1, 6)
    assert torch.allclose(w(x, params=_params(3))[0], x, atol=1e-9)
    y = w(x, params=_params(3, pitch=2))[0]  # f reads f + 2
    assert torch.allclose(y[:, :, :-2], x[:, :, 2:], atol=1e-9) and (y[:, :, -2:].abs() < 1e-9).all()
    y = w(x, params=_params(3, pitch=-1))[0]
    assert torch.allclose(y[:, :, 1:], x[:, :, :-1], atol=1e-9) and (y[:, :, 0].abs() < 1e-9).all()
    y = w(x, params=_params(3, shift=3 / 39))[0]  # t reads t + 3
    assert torch.allclose(y[:, :-3], x[:, 3:], atol=1e-9) and (y[:, -3:].abs() < 1e-9).all()
    y = w(x, params=_params(3, rate=2.0))[0]  # t reads 2t, anchored at the first frame
    assert torch.allclose(y[:, :20], x[:, 0::2], atol=1e-9) and (y[:, 20:].abs() < 1e-9).all()
    y = w(x, params=_params(3, rate=0.5))[0]  # a stretch by 2: even frames are the input, odd ones halfway
    assert torch.allclose(y[:, 0::2], x[:, :20], atol=1e-9)
    assert torch.allclose(y[:, 1:39:2], (x[:, :19] + x[:, 1:20]) / 2, atol=1e-9)
    y = w(x, log_scale=0.5, params=_params(3, gain=10.0))[0]
    assert torch.allclose(y - x, torch.full_like(x, math.log(10) * 0.5), atol=1e-9)


def test_spec_warp_draws_within_its_ranges_per_example():
    from datamodules.transforms import SpecWarp

    torch.manual_seed(0)
    rate, shift, pitch, gain = SpecWarp(0.25, 3, 0.2, 6).draw(4000)
    assert 0.8 - 1e-6 <= rate.min() < 0.82 and 1.23 < rate.max() <= 1.25 + 1e-6
    assert abs(torch.log(rate).mean()) < 0.01  # log-uniform: as many slower as faster
    for v, hi in ((shift, 0.2), (pitch, 3.0), (gain, 6.0)):
        assert v.abs().max() <= hi and v.abs().max() > 0.95 * hi and abs(v.mean()) < 0.05 * hi
    assert SpecWarp().draw(2)[0].eq(1).all() and not SpecWarp().enabled
    x = torch.randn(2, 10, 8)
    assert SpecWarp()(x)[0] is x  # disabled: untouched
    out = SpecWarp(0.25, 3, 0.2, 6)(torch.randn(5, 50, 16))[0]
    assert out.shape == (5, 50, 16) and not torch.equal(out[0], out[1])
    torch.manual_seed(1)  # the gain alone: exactly x plus the drawn gain per example, no resampling
    g = SpecWarp(gain_db=6).draw(5)[3]
    x = torch.randn(5, 50, 16, dtype=torch.float64)
    torch.manual_seed(1)
    out = SpecWarp(gain_db=6)(x, log_scale=0.5)[0]
    assert torch.equal(out, x + (g * (math.log(10) / 10) * 0.5).view(5, 1, 1).double())


@pytest.mark.parametrize("bad", [{"time_stretch": -0.1}, {"time_shift": 1.5}, {"gain_db": "6"}])
def test_spec_warp_rejects_bad_settings(bad):
    from datamodules.transforms import SpecWarp

    with pytest.raises(ValueError, match=next(iter(bad))):
        SpecWarp(**bad)


def test_filter_augment_is_piecewise_linear_within_its_range_per_example():
    """Every example's gain curve over the bins is linear between n + 1 edges (the first and last bin among
    them, 3 <= n <= 6), within ±max_db, different per example; it is added in log units (g ln(10)/10 / sigma)."""
    from datamodules.transforms import FilterAugment

    torch.manual_seed(0)
    aug = FilterAugment(6.0)
    g = aug.gains(200, 64).double()
    assert g.shape == (200, 64) and g.abs().max() <= 6.0 and g.abs().max() > 5.0
    assert not torch.equal(g[0], g[1]) and abs(g.mean()) < 0.5
    second = g[:, 2:] - 2 * g[:, 1:-1] + g[:, :-2]  # nonzero only at the inner edges
    kinks = (second.abs() > 1e-4).sum(1)  # float32 gains: rounding ~1e-6
    assert kinks.max() <= 5 and kinks.min() >= 1  # at most n - 1 = 5 inner edges; a random curve has some
    x = torch.randn(4, 30, 64, dtype=torch.float64)
    torch.manual_seed(1)
    g = aug.gains(4, 64)
    torch.manual_seed(1)
    out, y = aug(x, "y", log_scale=0.5)
    torch.testing.assert_close(out - x, (g.double() * math.log(10) / 10 * 0.5).unsqueeze(1).expand_as(x))
    assert y == "y"
    assert FilterAugment(0.0)(x)[0] is x  # disabled: untouched
    for bad in ({"max_db": -1}, {"max_db": True}, {"bands": (0, 3)}, {"bands": (5, 3)}):
        with pytest.raises(ValueError, match="FilterAugment"):
            FilterAugment(**bad)
