from __future__ import annotations

import dataclasses

import pytest

from countnet.config import ConfigError, TrainConfig, field_names, parse_overrides


def test_defaults_are_valid_and_frozen() -> None:
    cfg = TrainConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.lr = 1.0  # type: ignore[misc]
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg


def test_unknown_keys_are_named() -> None:
    with pytest.raises(ConfigError, match=r"unknown config key.*learning_rate"):
        TrainConfig.from_dict({"learning_rate": 0.1})


@pytest.mark.parametrize("key,value", [("lr", "fast"), ("epochs", 2.5), ("epochs", True),
                                       ("augment", 1), ("batchnorm", "yes"), ("model", 3)])
def test_wrong_types_are_named(key, value) -> None:
    with pytest.raises(ConfigError, match=f"^{key}: expected"):
        TrainConfig.from_dict({key: value})


@pytest.mark.parametrize("key,value,msg", [("model", "vgg", "model: must be one of"),
                                           ("dropout", 1.5, "dropout"), ("channels", 2, "channels"),
                                           ("max_count", -1, "max_count"),
                                           ("schedule", "step", "schedule")])
def test_bad_values_are_named(key, value, msg) -> None:
    with pytest.raises(ConfigError, match=msg):
        TrainConfig.from_dict({key: value})


def test_ints_for_floats_and_yaml_exponents() -> None:
    cfg = TrainConfig.from_dict({"lr": 1, "weight_decay": "1e-4"})
    assert cfg.lr == 1.0 and isinstance(cfg.lr, float) and cfg.weight_decay == 1e-4


def test_yaml_and_overrides(tmp_path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("lr: 0.01\nmodel: resnet18\n")
    cfg = TrainConfig.from_yaml(path, ["lr=2e-3", "augment=dihedral", "batchnorm=true"])
    assert (cfg.lr, cfg.model, cfg.augment, cfg.batchnorm) == (2e-3, "resnet18", "dihedral", True)
    roundtrip = tmp_path / "out.yaml"
    cfg.save_yaml(roundtrip)
    assert TrainConfig.from_yaml(roundtrip) == cfg


def test_overrides_never_evaluate_code() -> None:
    assert parse_overrides(["model=__import__('os').system('true')"]) == {
        "model": "__import__('os').system('true')"}
    with pytest.raises(ConfigError, match="key=value"):
        parse_overrides(["lr"])


def test_field_names_are_the_dataclass_fields() -> None:
    assert field_names() == tuple(TrainConfig().to_dict())


@pytest.mark.parametrize("values,msg", [
    ({"crop_size": -1}, "must be in [0, 1024] px"),
    ({"crop_size": 2000}, "must be in [0, 1024] px"),
    ({"crop_size": 32, "data": "synthetic"}, "crops need box-annotated photos"),
])
def test_bad_crop_sizes_are_rejected_in_one_line(values, msg) -> None:
    """validate() refuses them when the config is made, before any photo is read."""
    with pytest.raises(ConfigError) as caught:
        TrainConfig.from_dict(values)
    text = str(caught.value)
    assert "\n" not in text and text.startswith("crop_size: ") and msg in text
