"""Effective receptive fields: the gradient map on models whose ERF is known exactly, the summaries, images."""
import numpy as np
import pytest
import torch
import torch.nn as nn

from vmamba.analysis.erf import area_ratios, average_erf, erf_map, load_images, log_scale


def positive_convs(n):
    """n stacked 3x3 convs with positive weights: the ERF of the centre is exactly a (2n+1)^2 square."""
    convs = nn.Sequential(*[nn.Conv2d(3 if i == 0 else 4, 4, 3, padding=1, bias=False) for i in range(n)])
    for conv in convs:
        conv.weight.data.abs_()
    return convs


@pytest.mark.parametrize('layers', [1, 2])
def test_erf_of_stacked_convs_is_their_receptive_field(layers):
    size, c = 11, 5
    maps = erf_map(positive_convs(layers), torch.rand(2, 3, size, size))
    assert maps.shape == (2, size, size)
    support = maps[0] > 0
    expected = torch.zeros(size, size, dtype=torch.bool)
    expected[c - layers:c + layers + 1, c - layers:c + layers + 1] = True
    assert torch.equal(support, expected)
    assert torch.equal(maps[1] > 0, expected)


def test_average_erf_skips_non_finite_images():
    convs = positive_convs(1)

    def model(x):  # scaled by the image mean, so a NaN pixel makes that image's whole gradient NaN
        return convs(x) * x.mean(dim=(1, 2, 3), keepdim=True)

    images = torch.rand(3, 3, 9, 9)
    images[1, 0, 0, 0] = float('nan')
    mean, used = average_erf(model, [images[:2], images[2:]])
    assert used == 2
    assert np.isfinite(mean).all() and mean.shape == (9, 9)
    finite = erf_map(model, images[[0, 2]]).double().mean(dim=0).numpy()
    np.testing.assert_allclose(mean, finite, rtol=1e-6)


def test_log_scale_and_area_ratios():
    erf = np.zeros((11, 11))
    erf[5, 5] = 1.0
    erf[0, 0] = 1e-3
    erf[0, 1] = 1e-5
    shown = log_scale(erf, decades=3)
    assert shown[5, 5] == 1.0 and shown[0, 0] == pytest.approx(0.0) and shown[0, 1] == 0.0
    # All mass at the centre pixel: one pixel is enough for any threshold below 1.
    assert area_ratios(erf, (0.2, 0.99))[0.2] == pytest.approx(1 / 121)
    uniform = np.ones((11, 11))
    ratios = area_ratios(uniform, (0.2, 0.99))
    assert ratios[0.2] == pytest.approx(25 / 121)  # 5x5 = 25 >= 0.2 * 121
    assert ratios[0.99] == 1.0


def test_load_images_resizes_crops_and_normalises(tmp_path):
    from PIL import Image
    for i, (w, h) in enumerate([(40, 30), (30, 50)]):
        Image.fromarray(np.full((h, w, 3), 255 * i, dtype=np.uint8)).save(tmp_path / f'{i}.png')
    (batch,) = list(load_images(str(tmp_path), num=5, size=24, batch_size=4))
    assert batch.shape == (2, 3, 24, 24)
    # black and white images land on -mean/std and (1-mean)/std of ImageNet
    assert batch[0, 0].mean().item() == pytest.approx(-0.485 / 0.229, rel=1e-5)
    assert batch[1, 2].mean().item() == pytest.approx((1 - 0.406) / 0.225, rel=1e-5)
    with pytest.raises(FileNotFoundError, match='synthetic'):
        list(load_images(str(tmp_path / 'empty'), 1, 24))
