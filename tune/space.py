"""Search-space files: schema and validation.

A space is a YAML file:

    target: generalise            # generalise: minimise val_loss | overfit: maximise gap
    fixed:                        # TrainConfig fields held constant in every trial
      train_size: 4000
    search:                       # TrainConfig fields to search, sampled in this order
      lr: {type: loguniform, low: 1.0e-4, high: 1.0e-1}
      depth: {type: int, low: 3, high: 6}
      pool: {type: choice, values: [avg, sum]}
      width: {type: choice, values: [16, 32], when: {model: simple}}  # only for the simple net
      dropout: {type: uniform, low: 0.05, high: 0.5, optional: true}  # an on/off switch first
    start_from:                   # trials run first, before TPE samples (count in num_samples)
      - defaults                  # TrainConfig's own defaults (with the `fixed` values)
      - {lr: 3.0e-3, depth: 4}    # a config you know; unnamed searched fields keep defaults
    scheduler: {max_epochs: 8, grace_period: 1, reduction_factor: 3}  # ASHA, in epochs
    num_samples: 16               # trials
    max_concurrent: 2             # trials at once
    resources_per_trial: {cpu: 1, gpu: 0}   # gpu may be fractional: 0.25 = four trials per GPU

Types: `loguniform` and `uniform` for float fields, `int` for int fields (low and high
inclusive), `choice` (a non-empty `values` list) for any field. `when: {field: value or [values]}`
searches a field only when an earlier searched (or fixed) field has one of those values.
A field that only some models use (width, depth, batchnorm: simple's; small_stem,
weights_path: the ResNets') must be limited by `when: {model: ...}` to the models that use it,
unless every model the space can pick uses it (countnet.models.model_fields).
`optional: true` first samples a switch `use_<field>`; when it is off the field keeps its default.
Fields not searched in a trial keep their `fixed` value or the TrainConfig default. `epochs` is
not a field of a space: it is `scheduler.max_epochs`, so ASHA's max_t is the trials' length.

`start_from` lists starting trials, enqueued in Optuna's study (Ray's OptunaSearch
`points_to_evaluate`, i.e. `study.enqueue_trial`) so that they run first, with exactly these
values. Each is `defaults` or a mapping of searched fields; a searched field it does not name
takes its default. It must lie inside the space: every value within its `search` range, and an
`optional` field off exactly when it has its default value. A search that starts from the
defaults is never worse than them, short of noise.

Every mistake is found here, before Ray starts, as one SpaceError naming the file, key and reason.
How a space is sampled (Optuna's define-by-run function) is `tune.optuna_space`.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from countnet.config import (
    ConfigError,
    TrainConfig,
    field_names,
    field_type,
    read_yaml,
    yaml_float,
)
from countnet.experiment import SWITCH_PREFIX  # Optuna parameter that turns `optional` on
from countnet.models import MODELS, model_fields, model_specific_fields

# target -> (metric, mode) for Ray Tune, ASHA, Optuna and checkpoint ranking.
TARGETS = {"generalise": ("val_loss", "min"), "overfit": ("gap", "max")}
DIST_TYPES = ("loguniform", "uniform", "int", "choice")
TOP_KEYS = ("target", "fixed", "search", "start_from", "scheduler", "num_samples",
            "max_concurrent", "resources_per_trial")
PARAM_KEYS = ("type", "low", "high", "values", "when", "optional")
SCHEDULER_KEYS = ("max_epochs", "grace_period", "reduction_factor")
RESOURCE_KEYS = ("cpu", "gpu")
RESOURCE_DEFAULTS = {"cpu": 1, "gpu": 0}  # per trial, when resources_per_trial omits a key
SCHEDULER_FIELD = "epochs"  # set from scheduler.max_epochs, never searched
START_DEFAULTS = "defaults"  # a `start_from` entry: TrainConfig's defaults for every searched field


class SpaceError(ConfigError):
    """A search-space file is wrong. The message names the file, the key and the reason."""


@dataclass(frozen=True)
class Param:
    """One searched TrainConfig field."""

    name: str
    type: str  # one of DIST_TYPES
    low: float | int | None = None
    high: float | int | None = None
    values: tuple[Any, ...] = ()
    when: tuple[tuple[str, tuple[Any, ...]], ...] = ()  # (field, accepted values), all must hold
    optional: bool = False

    @property
    def switch(self) -> str:
        return SWITCH_PREFIX + self.name


@dataclass(frozen=True)
class SearchSpace:
    """A validated space file."""

    path: str
    target: str
    fixed: dict[str, Any]
    params: tuple[Param, ...]
    max_epochs: int
    grace_period: int
    reduction_factor: float
    num_samples: int
    max_concurrent: int
    cpu: float
    gpu: float
    start_from: tuple[Any, ...] = ()  # `defaults` or {field: value}, as written in the file

    @property
    def metric(self) -> str:
        return TARGETS[self.target][0]

    @property
    def mode(self) -> str:
        return TARGETS[self.target][1]

    def base_config(self) -> dict[str, Any]:
        """The constant part of every trial's config (Ray's param_space)."""
        return {**self.fixed, SCHEDULER_FIELD: self.max_epochs}

    def start_points(self) -> list[dict[str, Any]]:
        """The Optuna parameters of each `start_from` trial (switches included), in order."""
        return [start_point(self, entry) for entry in self.start_from]

    def replace(self, **changes: Any) -> SearchSpace:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """The space as a YAML mapping that `parse_space` reads back to an equal space."""
        search = {}
        for p in self.params:
            spec: dict[str, Any] = {"type": p.type}
            if p.type == "choice":
                spec["values"] = list(p.values)
            else:
                spec.update(low=p.low, high=p.high)
            if p.when:
                spec["when"] = {f: list(ok) for f, ok in p.when}
            if p.optional:
                spec["optional"] = True
            search[p.name] = spec
        out: dict[str, Any] = {"target": self.target, "fixed": dict(self.fixed), "search": search}
        if self.start_from:
            out["start_from"] = [e if e == START_DEFAULTS else dict(e) for e in self.start_from]
        return {**out, "scheduler": {"max_epochs": self.max_epochs,
                                     "grace_period": self.grace_period,
                                     "reduction_factor": self.reduction_factor},
                "num_samples": self.num_samples, "max_concurrent": self.max_concurrent,
                "resources_per_trial": {"cpu": self.cpu, "gpu": self.gpu}}


def load_space(path: str | Path) -> SearchSpace:
    """Read and validate a space file; any mistake raises SpaceError."""
    return parse_space(read_yaml(path, SpaceError), str(path))


def parse_space(raw: Any, path: str = "<space>") -> SearchSpace:
    """Validate an already-loaded space mapping. `path` only labels the error messages."""

    def fail(key: str, reason: str) -> typing.NoReturn:
        raise SpaceError(f"{path}: {key}: {reason}")

    if not isinstance(raw, dict):
        fail("(top level)", "must be a mapping with at least `target` and `search`")
    for key in raw:
        if key not in TOP_KEYS:
            fail(str(key), f"unknown key (known: {', '.join(TOP_KEYS)})")
    target = raw.get("target")
    if target not in TARGETS:
        fail("target", f"must be one of {', '.join(TARGETS)}, got {target!r}")
    fixed = _mapping(raw.get("fixed", {}), "fixed", fail)
    for key in fixed:
        _check_field(key, f"fixed.{key}", fail)
    params = tuple(_parse_param(name, spec, fixed, fail)
                   for name, spec in _mapping(raw.get("search", {}), "search", fail).items())
    for i, prm in enumerate(params):
        if prm.name in fixed:
            fail(f"search.{prm.name}", "is also in `fixed`; a field is fixed or searched")
        for field, _ in prm.when:
            if field not in field_names():
                fail(f"search.{prm.name}.when.{field}", "not a TrainConfig field")
            if field in {q.name for q in params[i:]}:
                fail(f"search.{prm.name}.when.{field}", "must be searched before this field")
    _check_model_fields(params, fixed, fail)
    sched = _mapping(raw.get("scheduler", {}), "scheduler", fail)
    for key in sched:
        if key not in SCHEDULER_KEYS:
            fail(f"scheduler.{key}", f"unknown key (known: {', '.join(SCHEDULER_KEYS)})")
    max_epochs = _positive_int(sched.get("max_epochs", 8), "scheduler.max_epochs", fail)
    grace = _positive_int(sched.get("grace_period", 1), "scheduler.grace_period", fail)
    if grace > max_epochs:
        fail("scheduler.grace_period", f"must be <= max_epochs ({grace} > {max_epochs})")
    rf = sched.get("reduction_factor", 3)
    if not _is_number(rf) or rf <= 1:
        fail("scheduler.reduction_factor", f"must be a number > 1, got {rf!r}")
    cpu, gpu = parse_resources(raw.get("resources_per_trial", {}), fail)
    space = SearchSpace(
        path=path, target=target, fixed=dict(fixed), params=params, max_epochs=max_epochs,
        grace_period=grace, reduction_factor=float(rf),
        num_samples=_positive_int(raw.get("num_samples", 8), "num_samples", fail),
        max_concurrent=_positive_int(raw.get("max_concurrent", 2), "max_concurrent", fail),
        cpu=cpu, gpu=gpu,
        start_from=_parse_start_from(raw.get("start_from", []), params, fail))
    check_configs(space)
    for i, entry in enumerate(space.start_from):
        try:
            start_point(space, entry)
        except ConfigError as e:
            raise SpaceError(f"{path}: start_from[{i}]: {e}") from None
    return space


def parse_resources(raw: Any, fail: Callable) -> tuple[float, float]:
    """One trial's (cpu, gpu) from a `resources_per_trial` mapping; a missing key takes its
    default (RESOURCE_DEFAULTS). The one check of these values, for the space file and for
    `countnet search --resources` alike.

    Args:
        raw: the mapping, e.g. {"cpu": 2, "gpu": 0.5}; None = all defaults.
        fail: called with (key, reason) on a mistake; it must raise.
    """
    res = _mapping(raw, "resources_per_trial", fail)
    for key in res:
        if key not in RESOURCE_KEYS:
            fail(f"resources_per_trial.{key}", f"unknown key (known: {', '.join(RESOURCE_KEYS)})")
    cpu, gpu = (res.get(key, RESOURCE_DEFAULTS[key]) for key in RESOURCE_KEYS)
    # YAML's .nan and .inf are numbers; NaN would pass the checks below (its comparisons are False).
    if not _is_number(cpu) or not math.isfinite(cpu) or cpu <= 0:
        fail("resources_per_trial.cpu", f"must be a number > 0, got {cpu!r}")
    if not _is_number(gpu) or not math.isfinite(gpu) or gpu < 0:
        fail("resources_per_trial.gpu", f"must be a number >= 0, got {gpu!r}")
    if gpu > 1 and not float(gpu).is_integer():  # Ray's rule: a fraction of one GPU, or whole GPUs
        fail("resources_per_trial.gpu", f"above 1 it must be a whole number, got {gpu!r}")
    return float(cpu), float(gpu)


def start_point(space: SearchSpace, entry: Any) -> dict[str, Any]:
    """The Optuna parameters of one `start_from` entry: what the define-by-run function would
    suggest for that config. Raises ConfigError when the config is invalid or outside the space.

    Args:
        space: the space (its fixed values and searched fields).
        entry: `defaults` or a mapping of searched fields to values.
    """
    given = {} if entry == START_DEFAULTS else dict(entry)
    # TrainConfig's own checks (types, ranges, scene fit) on the whole trial config.
    cfg = TrainConfig.from_dict({**space.base_config(), **given}).to_dict()
    defaults = TrainConfig().to_dict()
    point: dict[str, Any] = {}
    for prm in space.params:
        if not all(cfg[f] in ok for f, ok in prm.when):
            if prm.name in given:
                conds = ", ".join(f"{f} in {list(ok)}" for f, ok in prm.when)
                raise ConfigError(f"{prm.name}: set, but it is searched only when {conds}")
            continue
        value = cfg[prm.name]
        if prm.optional:
            point[prm.switch] = value != defaults[prm.name]  # off = the default value
            if not point[prm.switch]:
                continue
        if prm.type == "choice":
            if value not in prm.values:
                raise ConfigError(f"{prm.name}: {value!r} is not one of search.{prm.name}'s "
                                  f"values {list(prm.values)}")
        elif not prm.low <= value <= prm.high:
            raise ConfigError(f"{prm.name}: {value!r} is outside search.{prm.name}'s range "
                              f"[{prm.low}, {prm.high}]")
        point[prm.name] = value
    return point


def _parse_start_from(raw: Any, params: tuple[Param, ...], fail: Callable) -> tuple[Any, ...]:
    """The entries of `start_from`, each `defaults` or a mapping of searched fields."""
    if raw is None:
        return ()
    if not isinstance(raw, list):
        fail("start_from", f"must be a list of `{START_DEFAULTS}` or field mappings, got "
                           f"{type(raw).__name__}")
    searched = {p.name for p in params}
    for i, entry in enumerate(raw):
        if entry == START_DEFAULTS:
            continue
        if not isinstance(entry, dict):
            fail(f"start_from[{i}]", f"must be `{START_DEFAULTS}` or a mapping of field: value, "
                                     f"got {entry!r}")
        for key in entry:
            _check_field(key, f"start_from[{i}].{key}", fail)
            if key not in searched:
                fail(f"start_from[{i}].{key}", "not searched by this space; a starting trial "
                                               "sets searched fields only")
    return tuple(raw)


def check_configs(space: SearchSpace) -> None:
    """Build a TrainConfig from the fixed values and each searched value in turn.

    This catches wrong types, unknown choices (e.g. a model name) and out-of-range values with
    TrainConfig's own checks, before any trial starts.
    """
    try:
        TrainConfig.from_dict(space.base_config())
    except ConfigError as e:
        raise SpaceError(f"{space.path}: fixed: {e}") from None
    for prm in space.params:
        candidates = prm.values if prm.type == "choice" else (prm.low, prm.high)
        for value in candidates:
            try:
                TrainConfig.from_dict({**space.base_config(), prm.name: value})
            except ConfigError as e:
                raise SpaceError(f"{space.path}: search.{prm.name}: {e}") from None


def _check_model_fields(params: tuple[Param, ...], fixed: dict, fail: Callable) -> None:
    """A searched field that some model ignores (width, small_stem, ...) must be searched only for
    models that use it: every model the trial can have, after its `when: {model: ...}`."""
    by_name = {p.name: p for p in params}
    if "model" in by_name and by_name["model"].type == "choice":
        candidates = list(by_name["model"].values)
    else:
        candidates = [fixed.get("model", TrainConfig().model)]
    # An unknown model name is check_configs' error, reported after this.
    models = {m for m in candidates if isinstance(m, str) and m in MODELS}
    for prm in params:
        if prm.name not in model_specific_fields():
            continue
        allowed = models.intersection(*(set(ok) for f, ok in prm.when if f == "model"))
        ignoring = sorted(m for m in allowed if prm.name not in model_fields(m))
        if ignoring:
            users = sorted(m for m in models if prm.name in model_fields(m))
            hint = (f"add `when: {{model: [{', '.join(users)}]}}`" if users
                    else "no model of this space uses it")
            fail(f"search.{prm.name}", f"model {', '.join(ignoring)} ignores it; {hint}")


def _parse_param(name: Any, spec: Any, fixed: dict, fail: Callable) -> Param:
    key = f"search.{name}"
    _check_field(name, key, fail)
    spec = _mapping(spec, key, fail)
    for k in spec:
        if k not in PARAM_KEYS:
            fail(f"{key}.{k}", f"unknown key (known: {', '.join(PARAM_KEYS)})")
    kind = spec.get("type")
    if kind not in DIST_TYPES:
        fail(f"{key}.type", f"must be one of {', '.join(DIST_TYPES)}, got {kind!r}")
    ftype = field_type(name)
    low = high = None
    values: tuple[Any, ...] = ()
    if kind == "choice":
        if "low" in spec or "high" in spec:
            fail(key, "a choice takes `values`, not low/high")
        values = spec.get("values")
        if not isinstance(values, list) or not values:
            fail(f"{key}.values", "must be a non-empty list")
        values = tuple(values)
        if len(set(map(repr, values))) != len(values):
            fail(f"{key}.values", "has duplicates")
    else:
        if "values" in spec:
            fail(key, f"a {kind} range takes low/high, not `values`")
        if kind == "int" and ftype is not int:
            fail(f"{key}.type", f"int needs an int field; {name} is {ftype.__name__}")
        if kind != "int" and ftype is not float:
            fail(f"{key}.type", f"{kind} needs a float field; {name} is {ftype.__name__}")
        low, high = (_bound(spec, b, kind, key, fail) for b in ("low", "high"))
        if low >= high:
            fail(f"{key}.low", f"must be < high (got low={low}, high={high})")
        if kind == "loguniform" and low <= 0:
            fail(f"{key}.low", f"loguniform needs low > 0, got {low}")
    when = _mapping(spec.get("when", {}), f"{key}.when", fail)
    optional = spec.get("optional", False)
    if not isinstance(optional, bool):
        fail(f"{key}.optional", f"must be true or false, got {optional!r}")
    conds = tuple((str(f), tuple(v) if isinstance(v, list) else (v,)) for f, v in when.items())
    return Param(str(name), kind, low, high, values, conds, optional)


def _bound(spec: dict, which: str, kind: str, key: str, fail: Callable) -> float | int:
    if which not in spec:
        fail(f"{key}.{which}", "missing")
    v = spec[which]
    if yaml_float(v) is not None:
        v = yaml_float(v)
    if kind == "int":
        if not (isinstance(v, int) and not isinstance(v, bool)):
            fail(f"{key}.{which}", f"must be an integer, got {v!r}")
    elif not _is_number(v) or not math.isfinite(v):
        fail(f"{key}.{which}", f"must be a number, got {v!r}")
    return v


def _check_field(name: Any, key: str, fail: Callable) -> None:
    if name == SCHEDULER_FIELD:
        fail(key, "epochs is set by scheduler.max_epochs (ASHA's max_t)")
    if name not in field_names():
        fail(key, "not a TrainConfig field")


def _mapping(value: Any, key: str, fail: Callable) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        fail(key, f"must be a mapping, got {type(value).__name__}")
    return value


def _positive_int(value: Any, key: str, fail: Callable) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        fail(key, f"must be an integer >= 1, got {value!r}")
    return value


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)
