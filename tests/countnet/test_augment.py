from __future__ import annotations

import torch

from countnet.augment import augment_batch
from countnet.config import TrainConfig
from countnet.scenes import render


def test_dihedral_preserves_every_pixel_value_and_count() -> None:
    x, _ = render(TrainConfig(noise_max=0.0), 0, torch.arange(32))
    out = augment_batch(x, "dihedral", torch.Generator().manual_seed(0))
    assert out.shape == x.shape
    # A flip/rotation permutes pixels: the sorted values of each image are unchanged.
    assert torch.equal(out.flatten(1).sort(1).values, x.flatten(1).sort(1).values)
    assert not torch.equal(out, x)


def test_same_generator_seed_same_augmentation() -> None:
    x, _ = render(TrainConfig(), 0, torch.arange(8))
    for kind in ("dihedral", "photometric", "crop"):
        a = augment_batch(x, kind, torch.Generator().manual_seed(3))
        b = augment_batch(x, kind, torch.Generator().manual_seed(3))
        assert torch.equal(a, b)


def test_crop_changes_images_for_any_batch_size() -> None:
    for b in (1, 5, 32):
        x, _ = render(TrainConfig(), 0, torch.arange(b))
        out = augment_batch(x, "crop", torch.Generator().manual_seed(0))
        assert out.shape == x.shape and not torch.equal(out, x)


def test_none_is_identity() -> None:
    x = torch.rand(4, 1, 8, 8)
    assert augment_batch(x, "none", torch.Generator()) is x


def test_photometric_relights_the_image_and_moves_its_map_without_relighting_it() -> None:
    x, _ = render(TrainConfig(noise_max=0.0), 0, torch.arange(16))  # (16, 1, 64, 64)
    target = torch.zeros_like(x)
    target[:, :, 5, 9] = 1.0  # one marked pixel: where it lands says how the image moved
    gen = torch.Generator().manual_seed(4)
    out = augment_batch(torch.cat([x, target], 1), "photometric", gen, image_channels=1)
    image, moved = out[:, :1], out[:, 1:]
    flipped = augment_batch(torch.cat([x, target], 1), "dihedral",
                            torch.Generator().manual_seed(4))
    # The map went through the same flips as the image, and only through them.
    assert torch.equal(moved, flipped[:, 1:])
    assert (moved.flatten(1).sum(1) == 1).all()
    # The image did not only move: its values changed, stayed in [0, 1], and differ per image.
    assert not torch.equal(image.flatten(1).sort(1).values, x.flatten(1).sort(1).values)
    assert image.min() >= 0 and image.max() <= 1
    means = image.mean((1, 2, 3)) - x.mean((1, 2, 3))
    assert means.std() > 0.01
