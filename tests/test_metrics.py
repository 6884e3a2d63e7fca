"""PSNR and SSIM agree with scikit-image's implementations on real photographs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage import data
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from engine.metrics import psnr, ssim, to_y


def pair() -> tuple[np.ndarray, np.ndarray]:
    img = data.astronaut()[100:228, 150:278].astype(np.float64) / 255.0
    rng = np.random.default_rng(0)
    noisy = np.clip(img + rng.normal(0, 0.05, img.shape), 0, 1)
    return img, noisy


def tensor(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(a).permute(2, 0, 1)[None]


def test_psnr_matches_skimage() -> None:
    img, noisy = pair()
    expected = peak_signal_noise_ratio(img, noisy, data_range=1.0)
    assert psnr(tensor(noisy), tensor(img)) == pytest.approx(expected, abs=1e-6)


def test_psnr_with_border_crop_and_y_channel() -> None:
    img, noisy = pair()
    y = to_y(tensor(img))[0, 0].numpy()[4:-4, 4:-4]
    y_noisy = to_y(tensor(noisy))[0, 0].numpy()[4:-4, 4:-4]
    expected = peak_signal_noise_ratio(y, y_noisy, data_range=1.0)
    assert psnr(tensor(noisy), tensor(img), crop=4, y_channel=True) == pytest.approx(
        expected, abs=1e-6
    )


def test_ssim_matches_skimage_gaussian_variant() -> None:
    img, noisy = pair()
    expected = structural_similarity(
        img,
        noisy,
        data_range=1.0,
        channel_axis=2,
        gaussian_weights=True,
        sigma=1.5,
        use_sample_covariance=False,
    )
    assert ssim(tensor(noisy), tensor(img)) == pytest.approx(expected, abs=2e-3)


def test_identical_images() -> None:
    img, _ = pair()
    assert ssim(tensor(img), tensor(img)) == pytest.approx(1.0)
    assert psnr(tensor(img), tensor(img)) > 100
