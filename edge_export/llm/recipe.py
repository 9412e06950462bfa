"""LLM recipes: declarative TOML files in ``edge_export/llm/recipes/`` (or a user file).

A recipe names what to quantize and the gates its artifact must pass; each backend maps
the quantization to its own toolchain.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from edge_export.errors import UsageError

WEIGHTS = ("float32", "int8", "int4")
ACTIVATIONS = ("float32", "int8-dynamic")
_KEYS = {"name": str, "description": str, "quantization": dict, "gates": dict}
_QUANT_KEYS = {"weights": str, "group_size": int, "activations": str, "quantize_embeddings": bool}
_GATE_KEYS = {"greedy_steps": int, "min_logits_cosine": float, "min_top1_agreement": float,
              "max_perplexity_ratio": float}


@dataclass(frozen=True)
class LLMRecipe:
    name: str
    description: str
    weights: str = "float32"
    group_size: int = 0
    activations: str = "float32"
    # also the input embedding table, at the recipe's weight bits (every Linear, the output
    # layer included, is quantized by any quantized recipe; the embedding only with this)
    quantize_embeddings: bool = False
    greedy_steps: int = 32
    min_logits_cosine: float | None = None
    min_top1_agreement: float | None = None
    max_perplexity_ratio: float | None = None

    @property
    def quantized(self) -> bool:
        return self.weights != "float32"

    def as_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if v is not None}


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
    recipe = LLMRecipe(name=data.get("name", Path(origin).stem), description=data.get("description", ""),
                       **quant, **gates)
    if recipe.weights not in WEIGHTS or recipe.activations not in ACTIVATIONS:
        raise UsageError(f"recipe {origin}: weights must be one of {', '.join(WEIGHTS)} and activations "
                         f"one of {', '.join(ACTIVATIONS)}")
    needed = ("min_top1_agreement", "max_perplexity_ratio") if recipe.quantized else ("min_logits_cosine",)
    if recipe.quantize_embeddings and not recipe.quantized:
        raise UsageError(f"recipe {origin}: quantize_embeddings needs quantized weights (int8 or int4)")
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
