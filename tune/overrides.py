"""`countnet search --set key=value` and `--resources cpu=N,gpu=G`: a space's `fixed` fields and
its per-trial resources, set from the command line.

The values are parsed exactly as `countnet train --set` parses them (`countnet.config.
parse_overrides`: YAML scalars, never evaluated) and checked before Ray starts: an unknown key, a
key the space searches, `epochs` (the space's `scheduler.max_epochs`) or a value TrainConfig
rejects raises ConfigError, which `countnet` prints as one line and exits 2.

Trials run in their own trial directory (Ray Tune changes the working directory of each trial), so
a relative `data_dir` is made absolute against the current directory here, where it means what it
means to `countnet train`, and must name an existing directory.

`--resources` overrides only the keys it names (`gpu=0.5` keeps the space's cpu); each value is
checked by the space file's own rule (`tune.space.parse_resources`), so the trainable always gets
both keys, "cpu" included, as Ray requires.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, NoReturn

from countnet.config import ConfigError, TrainConfig, field_names, parse_overrides
from tune.space import RESOURCE_KEYS, SCHEDULER_FIELD, SearchSpace, parse_resources, parse_space

DATA_DIR_FIELD = "data_dir"  # a path: resolved against the current directory
RESOURCES_FLAG = "--resources"


def set_fixed(space: SearchSpace, items: list[str]) -> SearchSpace:
    """The space with `key=value` items added to (or replacing) its `fixed` fields.

    Args:
        space: a validated search space.
        items: `--set` arguments, e.g. ["data=folder", "data_dir=my_photos"].

    Returns:
        A validated space; `space` itself when `items` is empty.

    Raises:
        ConfigError: a malformed item, an unknown or searched key, `epochs`, a value TrainConfig
            rejects (alone or with the space's other values), or a `data_dir` that is not a
            directory. The message names the item.
    """
    if not items:
        return space
    values = parse_overrides(items)
    searched = {p.name for p in space.params}
    for key, value in values.items():
        if key == SCHEDULER_FIELD:
            raise ConfigError(f"--set {key}: the epochs of a trial are the space's "
                              f"scheduler.max_epochs (ASHA's max_t); use --max-epochs")
        if key not in field_names():
            raise ConfigError(f"--set {key}: not a TrainConfig field (known: "
                              f"{', '.join(field_names())})")
        if key in searched:
            raise ConfigError(f"--set {key}: {space.path} searches it; a field is fixed or "
                              f"searched, so remove search.{key} from a copy of the space")
        if key == DATA_DIR_FIELD:
            values[key] = _data_dir(value)
    fixed = {**space.fixed, **values}
    try:  # TrainConfig's own checks, as `countnet train --set` runs them
        TrainConfig.from_dict({**space.base_config(), **values})
    except ConfigError as e:
        raise ConfigError(f"--set {' '.join(items)}: {e}") from None
    try:  # with every searched value and starting point of the space
        return parse_space(space.replace(fixed=fixed).to_dict(), space.path)
    except ConfigError as e:
        raise ConfigError(f"--set {' '.join(items)}: {e}") from None


def resolve_data_dir(space: SearchSpace) -> SearchSpace:
    """The space with its `data_dir` absolute, checked before Ray starts (whether it came from the
    space file or from --set): without this, every trial would fail on a missing folder.

    Args:
        space: a validated search space, --set items applied.

    Returns:
        `space` itself for synthetic data; else the space with `fixed.data_dir` resolved against
        the current directory.

    Raises:
        ConfigError: the data needs a directory and `data_dir` names none.
    """
    base = space.base_config()
    if base.get("data", TrainConfig.data) == "synthetic":
        return space
    value = base.get(DATA_DIR_FIELD, "")
    path = Path(str(value)).expanduser()
    if not value or not path.is_dir():
        raise ConfigError(f"{space.path}: {DATA_DIR_FIELD}={value}: no such directory "
                          f"(give --set {DATA_DIR_FIELD}=DIR)")
    return space.replace(fixed={**space.fixed, DATA_DIR_FIELD: str(path.resolve())})


def _data_dir(value: Any) -> Any:
    """An absolute path for a relative `data_dir`; an error when it is not a directory."""
    if not isinstance(value, str) or not value:
        return value  # TrainConfig rejects what is not a string
    path = Path(value).expanduser()
    if not path.is_dir():
        raise ConfigError(f"--set {DATA_DIR_FIELD}={value}: no such directory")
    return str(path.resolve())


def parse_resources_flag(text: str) -> dict[str, float]:
    """`--resources cpu=2,gpu=0.5` as {"cpu": 2.0, "gpu": 0.5}: only the keys given.

    Args:
        text: comma-separated key=value items; keys are those of `resources_per_trial`.

    Returns:
        The given keys and their values, each checked by `tune.space.parse_resources`.

    Raises:
        ConfigError: a malformed item, a repeated or unknown key, or a value the space file would
            refuse (cpu <= 0, gpu < 0, a fractional gpu above 1). The message names the flag.
    """
    def fail(key: str, reason: str) -> NoReturn:
        raise ConfigError(f"{RESOURCES_FLAG} {text}: {key}: {reason}")

    given: dict[str, Any] = {}
    for item in text.split(","):
        key, sep, raw = (part.strip() for part in item.partition("="))
        if not sep or not key or not raw:
            raise ConfigError(f"{RESOURCES_FLAG} {text}: expected KEY=VALUE[,KEY=VALUE] with "
                              f"keys {', '.join(RESOURCE_KEYS)}, e.g. cpu=2,gpu=0.5")
        if key in given:
            fail(key, "given twice")
        given[key] = _number(raw)
    cpu, gpu = parse_resources(given, fail)  # the missing key takes its default, unused here
    return {k: v for k, v in {"cpu": cpu, "gpu": gpu}.items() if k in given}


def _number(raw: str) -> Any:
    """A number as written (int or float), or the text itself for the space's check to refuse."""
    for kind in (int, float):
        try:
            return kind(raw)
        except ValueError:
            pass
    return raw
