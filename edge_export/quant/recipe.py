"""Recipes: declarative TOML files, one per target x quantization recipe.

A recipe names a quantization *scheme* that the target's exporter implements, its
parameters, calibration needs and the gates its artifact must pass. The files live
in ``recipes/<target>/<name>.toml``; ``--recipe path.toml`` loads a user's own.
"""

from __future__ import annotations

import hashlib
import json
import tomllib
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

from edge_export.errors import UsageError

SCHEMA_VERSION = 1
FP32_GATE = {"cosine": 0.9999, "snr_db": 60.0}


@dataclass(frozen=True)
class Thresholds:
    cosine: float | None = None
    snr_db: float | None = None
    top1_agreement: float | None = None
    max_abs: float | None = None

    def to_json(self) -> dict[str, float]:
        return {k: v for k, v in self.__dict__.items() if v is not None}


@dataclass(frozen=True)
class Recipe:
    name: str
    target: str
    summary: str
    sha256: str
    unsupported: str | None = None
    scheme: str = "none"
    params: dict[str, Any] = field(default_factory=dict)
    calibration_required: bool = False
    calibration_samples: int = 64
    parity: Thresholds = Thresholds(**FP32_GATE)
    fidelity: Thresholds | None = None
    # What keep_float = "auto" aims for; [parity] still refuses below its own thresholds.
    goal: Thresholds | None = None
    max_accuracy_drop: float | None = None
    minimum_deployment: str | None = None
    # Quantization a user may hand over that this recipe carries (compression's
    # ``quantization``, e.g. "torchao:8da4w"): "same" where the artifact computes the user's
    # scheme (gated tightly against the user's module), "closest" where it approximates it.
    carries: dict[str, str] = field(default_factory=dict)
    # The portable name the user asked for (``int8``) when this recipe is what it resolved
    # to on the target; not part of to_json, so both names share one cache entry.
    requested: str | None = None

    @property
    def supported(self) -> bool:
        return self.unsupported is None

    def param(self, key: str, default: Any = None) -> Any:
        return self.params.get(key, default)

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "target": self.target, "summary": self.summary,
                "scheme": self.scheme, "params": self.params, "sha256": self.sha256,
                "calibration": {"required": self.calibration_required,
                                "samples": self.calibration_samples},
                "parity": self.parity.to_json(),
                "fidelity": self.fidelity.to_json() if self.fidelity else None,
                "goal": self.goal.to_json() if self.goal else None,
                "max_accuracy_drop": self.max_accuracy_drop,
                "minimum_deployment": self.minimum_deployment}


def parse_recipe(text: str, origin: str, validate: bool = True) -> Recipe:
    """Validate and build a recipe; every problem is a UsageError naming the key.
    ``validate=False`` is for the shipped recipes only: the test suite validates them
    (tests/test_recipes.py), and a run then skips importing jsonschema (~0.3 s)."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"recipe {origin} is not valid TOML: {exc}") from exc
    if validate:
        _validate(data, origin)
    quant = dict(data.get("quantize", {}))
    calib = data.get("calibration", {})
    default_drop = 3.0 if quant.get("bits") == 4 else 1.0 if quant.get("bits") == 8 else None
    return Recipe(
        name=data["name"], target=data["target"], summary=data["summary"],
        sha256=hashlib.sha256(text.encode()).hexdigest(),
        unsupported=data.get("unsupported"),
        scheme=quant.pop("scheme", "none"), params=quant,
        calibration_required=calib.get("required", False),
        calibration_samples=calib.get("samples", 64),
        parity=Thresholds(**data.get("parity", FP32_GATE)),
        fidelity=Thresholds(**data["fidelity"]) if "fidelity" in data else None,
        goal=Thresholds(**data["goal"]) if "goal" in data else None,
        max_accuracy_drop=data.get("accuracy", {}).get("max_drop", default_drop),
        minimum_deployment=data.get("deployment", {}).get("minimum"),
        carries=dict(data.get("carries", {})),
    )


def load_recipe_file(path: str | Path) -> Recipe:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise UsageError(f"recipe file {path} does not exist") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read recipe file {path}: {exc}") from exc
    return parse_recipe(text, str(path))


def builtin_recipes(target: str) -> dict[str, Recipe]:
    """The recipes shipped for a target, by name (supported and refused cells alike)."""
    return dict(_builtin_recipes(target))


@cache
def _builtin_recipes(target: str) -> dict[str, Recipe]:
    folder = resources.files("edge_export.recipes").joinpath(target)
    if not folder.is_dir():
        return {}
    found = {}
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".toml"):
            recipe = parse_recipe(entry.read_text(encoding="utf-8"), f"recipes/{target}/{entry.name}",
                                  validate=False)
            found[recipe.name] = recipe
    return found


@dataclass(frozen=True)
class Alias:
    """A portable recipe name (``recipes/<target>/aliases/<name>.toml``): the target's own
    recipe it stands for with ``--calibration-data`` and without."""

    name: str
    target: str
    summary: str
    calibrated: str
    data_free: str

    def resolve(self, calibrated: bool) -> str:
        return self.calibrated if calibrated else self.data_free

    def to_json(self) -> dict[str, str]:
        return {"summary": self.summary, "calibrated": self.calibrated, "data_free": self.data_free}


ALIAS_KEYS = ("name", "summary", "calibrated", "data_free")


def builtin_aliases(target: str) -> dict[str, Alias]:
    """The portable names a target defines, by name; each must name a shipped recipe."""
    return dict(_builtin_aliases(target))


@cache
def _builtin_aliases(target: str) -> dict[str, Alias]:
    folder = resources.files("edge_export.recipes").joinpath(target, "aliases")
    if not folder.is_dir():
        return {}
    found = {}
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if not entry.name.endswith(".toml"):
            continue
        origin = f"recipes/{target}/aliases/{entry.name}"
        data = tomllib.loads(entry.read_text(encoding="utf-8"))
        if sorted(data) != sorted(ALIAS_KEYS) or not all(isinstance(v, str) for v in data.values()):
            raise ValueError(f"{origin}: an alias has exactly the string keys {', '.join(ALIAS_KEYS)}")
        alias = Alias(target=target, **data)
        shipped = _builtin_recipes(target)
        for name in (alias.calibrated, alias.data_free):
            if name not in shipped or not shipped[name].supported:
                raise ValueError(f"{origin}: {name!r} is not a supported {target} recipe")
        found[alias.name] = alias
    return found


def is_recipe_file(value: str) -> bool:
    return value.endswith(".toml")


_SCHEMA: dict | None = None


def _validate(data: dict, origin: str) -> None:
    import jsonschema

    global _SCHEMA
    if _SCHEMA is None:
        _SCHEMA = json.loads(resources.files("edge_export").joinpath(
            "schemas/recipe.schema.json").read_text())
    # A misspelt key is named first (it is also why a required key looks missing), then wrong
    # values, then missing or empty tables.
    rank = {"additionalProperties": 0, "required": 2, "minProperties": 2}
    errors = sorted(jsonschema.Draft202012Validator(_SCHEMA).iter_errors(data),
                    key=lambda e: (rank.get(str(e.validator), 1), list(e.absolute_path)))
    if errors:
        err = errors[0]
        where = ".".join(str(p) for p in err.absolute_path) or "(top level)"
        if err.validator == "additionalProperties":
            extra = sorted(set(err.instance) - set(err.schema.get("properties", {})))
            key = f"{where}.{extra[0]}" if err.absolute_path else extra[0]
            raise UsageError(f"recipe {origin}: unknown key {key!r}",
                             hint="see recipes/README.md for the keys a recipe may set")
        if err.validator == "required":
            missing = [k for k in err.validator_value if k not in err.instance][0]
            key = f"{where}.{missing}" if err.absolute_path else missing
            raise UsageError(f"recipe {origin}: key {key!r} is missing", hint=_REQUIRED_HINTS.get(key))
        if err.validator == "minProperties" and not err.instance:
            raise UsageError(f"recipe {origin}: key {where!r} is empty", hint=_REQUIRED_HINTS.get(where))
        raise UsageError(f"recipe {origin}: key {where!r}: {err.message}")


# A recipe without a gate would publish whatever the target produced.
_REQUIRED_HINTS = {"parity": "set the gate its artifacts must pass, e.g. [parity] cosine = 0.99, snr_db = 20.0; "
                             "a recipe the target cannot build sets unsupported = \"why\" instead"}
