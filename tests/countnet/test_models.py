from __future__ import annotations

import pytest
import torch

from countnet.config import MODEL_NAMES, TrainConfig
from countnet.models import (
    MODELS,
    build_model,
    load_pretrained,
    model_fields,
    model_from_config,
    model_options,
    model_specific_fields,
    set_train_mode,
)


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("pool", ["avg", "sum", "density"])
def test_every_registered_model_gives_one_finite_count_per_image(name, pool) -> None:
    torch.manual_seed(0)
    model = build_model(name, channels=3 if name == "resnet18" else 1, pool=pool, dropout=0.2)
    x = torch.rand(2, 3 if name == "resnet18" else 1, 64, 64)
    model.train()
    out = model(x)
    assert out.shape == (2,)
    assert torch.isfinite(out).all()
    model.eval()
    with torch.no_grad():
        assert torch.isfinite(model(x)).all()


def test_resnet_large_stem_and_local_weights(tmp_path) -> None:
    import torchvision

    torch.manual_seed(0)
    ref = torchvision.models.resnet18(weights=None)
    path = tmp_path / "r18.pt"
    torch.save(ref.state_dict(), path)
    cfg = TrainConfig(model="resnet18", channels=3, small_stem=False, weights_path=str(path))
    model = model_from_config(cfg)
    assert not torch.equal(model.body[0].weight, ref.conv1.weight)  # building reads no file
    load_pretrained(model, cfg)
    assert torch.equal(model.body[0].weight, ref.conv1.weight)  # the local file was loaded
    assert model(torch.rand(1, 3, 96, 96)).shape == (1,)


def test_unknown_model_is_named() -> None:
    with pytest.raises(ValueError, match="unknown 'vgg'"):
        build_model("vgg")


def test_a_builder_takes_only_the_options_it_declares() -> None:
    with pytest.raises(ValueError, match="width: model resnet18 does not take it"):
        build_model("resnet18", width=8)
    with pytest.raises(ValueError, match="small_stem: model simple does not take it"):
        build_model("simple", small_stem=True)
    assert "weights_path" not in model_options("resnet18")  # loading is load_pretrained's
    assert model_fields("resnet18") >= {"small_stem", "weights_path"}
    assert model_specific_fields() == {"width", "depth", "batchnorm", "small_stem", "weights_path"}
    for name in MODELS:  # every option is a TrainConfig field of the same name
        assert set(model_options(name)) <= set(TrainConfig().to_dict())


def test_model_from_config_passes_each_model_its_own_options() -> None:
    cfg = TrainConfig(model="resnet18", width=8, depth=3, batchnorm=True)  # simple's fields
    assert model_from_config(cfg).body[0].kernel_size == (3, 3)  # built; its small stem
    simple_net = model_from_config(TrainConfig(model="simple", width=8, depth=3))
    assert sum(isinstance(m, torch.nn.Conv2d) for m in simple_net.body) == 3


def test_freeze_body_trains_the_head_only_and_freeze_bn_fixes_statistics() -> None:
    cfg = TrainConfig(model="resnet18", freeze_body=True)
    model = model_from_config(cfg)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"head.fc.weight", "head.fc.bias"}
    set_train_mode(model, cfg)
    assert all(m.training for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    set_train_mode(model, cfg.replace(freeze_bn=True))
    assert not any(m.training for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))


def test_config_model_names_are_the_registry() -> None:
    """config.py keeps the names without importing torch; they must be the registry's."""
    assert tuple(MODELS) == MODEL_NAMES


@pytest.mark.parametrize("norm", ["none", "image"])
def test_image_norm_removes_the_background_level(norm: str) -> None:
    torch.manual_seed(0)
    model = build_model("simple", width=8, depth=3, input_norm=norm).eval()
    x = torch.rand(4, 1, 64, 64) * 0.2
    with torch.no_grad():
        same = torch.allclose(model(x), model(x + 0.5), atol=1e-5)
    assert same == (norm == "image")  # only the normalised net ignores a uniform lift


def test_density_head_counts_are_the_sum_of_a_non_negative_density() -> None:
    torch.manual_seed(0)
    model = build_model("simple", channels=1, pool="density")
    x = torch.rand(3, 1, 40, 56)  # any size: the density has one value per final position
    model.eval()
    with torch.no_grad():
        density = model.head.density(model.body(model.norm(x)))  # (3, 1, 20, 28)
        counts = model(x)  # (3,)
    assert density.shape == (3, 1, 20, 28)
    assert (density >= 0).all()
    assert torch.allclose(density.sum((1, 2, 3)), counts)
    # At initialisation the density is flat at DENSITY_INIT per position.
    from countnet.models import DENSITY_INIT
    assert torch.allclose(density, torch.full_like(density, DENSITY_INIT))
