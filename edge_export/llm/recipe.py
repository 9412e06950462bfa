"""LLM recipes: declarative TOML files in ``edge_export/llm/recipes/`` (or a user file).

A recipe names what to quantize and the gates its artifact must pass; each backend maps
the quantization to its own toolchain. A ``[targets.<target>]`` table overrides
quantization keys for one target, declaratively (Core ML has no dynamic activation
quantization, so ``[targets.ios] activations = "float32"`` makes 4bit weight-only there).
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from edge_export.errors import UsageError

WEIGHTS = ("float32", "int8", "int4")
ACTIVATIONS = ("float32", "int8-dynamic")
COMPUTE = ("float32", "float16")
_KEYS = {"name": str, "description": str, "quantization": dict, "gates": dict, "targets": dict}
_QUANT_KEYS = {"weights": str, "group_size": int, "activations": str, "compute": str}
_TARGET_KEYS = {**_QUANT_KEYS, "description": str}  # what [targets.<target>] may override
_GATE_KEYS = {"greedy_steps": int, "min_logits_cosine": float, "min_top1_agreement": float,
              "max_perplexity_ratio": float}


@dataclass(frozen=True)
class LLMRecipe:
    name: str
    description: str
    weights: str = "float32"
    group_size: int = 0
    activations: str = "float32"
    greedy_steps: int = 32
    min_logits_cosine: float | None = None
    min_top1_agreement: float | None = None
    max_perplexity_ratio: float | None = None
    compute: str = "float32"  # arithmetic precision, where the target offers a choice (Core ML)
    targets: dict[str, dict] = field(default_factory=dict)  # per-target quantization overrides

    def for_target(self, target: str) -> LLMRecipe:
        """The recipe as ``target`` builds it: its ``[targets.<target>]`` overrides applied."""
        return dataclasses.replace(self, **self.targets.get(target, {}), targets={})

    @property
    def quantized(self) -> bool:
        return self.weights != "float32"

    @property
    def exact(self) -> bool:
        """Float weights and compute: gated on identical greedy tokens. Anything else (int
        weights, fp16 arithmetic) flips near-tied tokens somewhere in 32 greedy steps, so it
        is gated on teacher-forced top-1 agreement and perplexity instead."""
        return not self.quantized and self.compute == "float32"

    def as_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if v is not None and v != {}}


def builtin_names() -> list[str]:
    return sorted(p.name[:-5] for p in resources.files("edge_export.llm").joinpath("recipes").iterdir()
                  if p.name.endswith(".toml"))


def load_recipe(value: str) -> LLMRecipe:
    """A built-in recipe by name, or a TOML file by path."""
    if value.endswith(".toml"):
        path = Path(value)
        if not path.is_file():
            raise UsageError(f"recipe file {value} does not exist")
        return parse_recipe(path.read_text(), value)
    if value not in builtin_names():
        raise UsageError(f"unknown LLM recipe {value!r}", hint=f"choose from {', '.join(builtin_names())}")
    text = resources.files("edge_export.llm").joinpath(f"recipes/{value}.toml").read_text()
    return parse_recipe(text, value)


def parse_recipe(text: str, origin: str) -> LLMRecipe:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"recipe {origin}: not valid TOML: {exc}") from exc
    _check(data, _KEYS, origin, "")
    quant, gates = data.get("quantization", {}), data.get("gates", {})
    _check(quant, _QUANT_KEYS, origin, "quantization.")
    _check(gates, _GATE_KEYS, origin, "gates.")
    targets = data.get("targets", {})
    for target, overrides in targets.items():
        if not isinstance(overrides, dict):
            raise UsageError(f"recipe {origin}: targets.{target} must be a table")
        _check(overrides, _TARGET_KEYS, origin, f"targets.{target}.")
    recipe = LLMRecipe(name=data.get("name", Path(origin).stem), description=data.get("description", ""),
                       **quant, **gates, targets=targets)
    for variant in (recipe, *(recipe.for_target(t) for t in targets)):
        if variant.weights not in WEIGHTS or variant.activations not in ACTIVATIONS \
                or variant.compute not in COMPUTE:
            raise UsageError(f"recipe {origin}: weights must be one of {', '.join(WEIGHTS)}, activations "
                             f"one of {', '.join(ACTIVATIONS)} and compute one of {', '.join(COMPUTE)}")
    needed = ("min_logits_cosine",) if recipe.exact else ("min_top1_agreement", "max_perplexity_ratio")
    if any(getattr(recipe, gate) is None for gate in needed):
        raise UsageError(f"recipe {origin}: needs gates {' and '.join(needed)}")
    return recipe


def _check(data: dict, keys: dict[str, type], origin: str, prefix: str) -> None:
    for key, value in data.items():
        if key not in keys:
            raise UsageError(f"recipe {origin}: unknown key {prefix}{key}")
        expected = keys[key]
        if not isinstance(value, expected) and not (expected is float and isinstance(value, int)):
            raise UsageError(f"recipe {origin}: {prefix}{key} must be a {expected.__name__}")
