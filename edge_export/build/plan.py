"""The (target, recipe) plan of an export: which targets ``--target`` means, what each
``--recipe`` resolves to there (portable names included), the ``--keep-float`` override, and
the recipe that carries a model the user already quantized. Pure data work on the registry
and the recipe files: nothing here imports torch or a toolchain."""

from __future__ import annotations

from dataclasses import replace

from edge_export.build.exporter import ALL_TARGETS, Availability, select_targets, target_names
from edge_export.errors import CannotCarry, UsageError
from edge_export.quant.recipe import Recipe, builtin_aliases, builtin_recipes, is_recipe_file, load_recipe_file


def resolve_targets(names: tuple[str, ...]) -> list[str]:
    """Targets to build; ``all`` means the installed ones (see exporter.select_targets)."""
    return select_targets(names)[0]


def resolve_recipes(targets: list[str], requested: tuple[str, ...],
                    calibrated: bool = False) -> list[tuple[str, Recipe]]:
    """The (target, recipe) matrix for targets named explicitly: a recipe a target does not
    have is a usage error (see plan_recipes)."""
    return plan_recipes(targets, requested, calibrated=calibrated)[0]


def plan_targets_and_recipes(names: tuple[str, ...], requested: tuple[str, ...], calibrated: bool
                             ) -> tuple[list[str], list[tuple[str, Recipe]], list[Availability]]:
    """``--target`` and ``--recipe`` as the run will take them: the targets, the (target,
    recipe) plan, and what ``--target all`` left out (not installed, or without the recipe)."""
    targets, skipped = select_targets(names)
    explicit = {n for n in names if n != ALL_TARGETS}
    plan, refused = plan_recipes(targets, requested, calibrated=calibrated,
                                 optional=frozenset(t for t in targets if t not in explicit))
    return targets, plan, skipped + refused


def plan_recipes(targets: list[str], requested: tuple[str, ...], *, calibrated: bool = False,
                 optional: frozenset[str] = frozenset()) -> tuple[list[tuple[str, Recipe]], list[Availability]]:
    """The (target, recipe) matrix, and the ``optional`` targets left out.

    A shipped name applies to every target, a recipe file to its own. A portable name
    (``int8``, ``int4``: recipes/<target>/aliases/) becomes each target's own recipe, the
    ``calibrated`` one when calibration data is given; the recipe keeps the name asked for in
    ``requested``. A target without a requested recipe is refused when it was named, and left
    out (one Availability naming every recipe it lacks) when ``--target all`` brought it in
    (``optional``); when no target is left, the first refusal is raised."""
    files = [load_recipe_file(r) for r in requested if is_recipe_file(r)]
    names = [r for r in requested if not is_recipe_file(r)]
    plan: list[tuple[str, Recipe]] = []
    refusals: dict[str, list[tuple[str, UsageError]]] = {}
    for target in targets:
        for name in names:
            try:
                recipe = _shipped_recipe(target, name, calibrated)
            except UsageError as exc:
                if target not in optional:
                    raise
                refusals.setdefault(target, []).append((name, exc))
                continue
            if all((t, r.name) != (target, recipe.name) for t, r in plan):
                plan.append((target, recipe))
        plan.extend((target, r) for r in files if r.target == target)
    for recipe in files:
        if recipe.target not in targets:
            raise UsageError(f"recipe file {recipe.name!r} is for target {recipe.target}, "
                             f"which is not among --target {', '.join(targets)}")
        if not recipe.supported:
            raise UsageError(f"recipe file {recipe.name!r} says it is unsupported: "
                             f"{recipe.unsupported}")
    if not plan and refusals:
        raise next(iter(refusals.values()))[0][1]
    skipped = [Availability(target, refusal="; ".join(exc.message for _, exc in refused),
                            recipes=tuple(name for name, _ in refused))
               for target, refused in refusals.items()]
    return plan, skipped


def _shipped_recipe(target: str, name: str, calibrated: bool) -> Recipe:
    """The target's recipe ``name``, or the one its portable name resolves to."""
    shipped = builtin_recipes(target)
    alias = builtin_aliases(target).get(name)
    if alias is not None:
        return replace(shipped[alias.resolve(calibrated)], requested=name)
    recipe = shipped.get(name)
    supported = sorted(n for n, r in shipped.items() if r.supported)
    hint = f"{target} supports: {', '.join(supported)}; portable: {', '.join(sorted(builtin_aliases(target)))}"
    if recipe is None:
        raise UsageError(f"unknown recipe {name!r} for target {target}", hint=hint)
    if not recipe.supported:
        raise UsageError(f"recipe {name!r} is not supported on {target}: {recipe.unsupported}", hint=hint)
    return recipe


def override_keep_float(plan: list[tuple[str, Recipe]],
                        value: str | None) -> list[tuple[str, Recipe]]:
    """``--keep-float auto|none``: every recipe whose scheme honours keep_float gets it (its own
    keep_float replaced, ``none`` by an empty list; a different sha256, so the cache keeps
    both); others are unchanged."""
    if value is None:
        return plan
    keep: str | list[str] = [] if value == "none" else value
    import hashlib

    from edge_export.build.exporter import get_exporter

    out = []
    for target, recipe in plan:
        if get_exporter(target).schemes.honours_keep_float(recipe.scheme):
            recipe = replace(recipe, params={**recipe.params, "keep_float": keep},
                             sha256=hashlib.sha256(f"{recipe.sha256}|keep_float={value}".encode())
                             .hexdigest())
        out.append((target, recipe))
    return out


PREQUANTIZED = "prequantized"
FLOAT_RECIPE = "fp32"


def compose_with_compression(plan: list[tuple[str, Recipe]], compression: dict,
                             explicit: frozenset[str] = frozenset()
                             ) -> tuple[list[tuple[str, Recipe]], list[Availability]]:
    """A model the user already quantized keeps its quantization: the float recipe becomes
    the target's recipe that declares it ``carries`` it (recipes/<target>/*.toml: a PT2E graph
    ships as ``prequantized``, torchao weights as the recipe of the same or the closest
    scheme, "same" preferred); any other recipe would quantize it again and is refused,
    never applied silently.

    A target that cannot carry the model is refused when named in ``explicit``; one that
    ``--target all`` brought in is left out (returned, to be reported), unless none is left."""
    quantized = compression.get("quantization")
    if not quantized:
        for target, recipe in plan:
            if recipe.name == PREQUANTIZED:
                raise UsageError(f"recipe {PREQUANTIZED!r} ({target}) is for models quantized with "
                                 "PT2E before export; this model is float",
                                 hint="choose a quantization recipe, e.g. --recipe int8-static")
        return plan, []
    composed: list[tuple[str, Recipe]] = []
    left_out: list[tuple[str, UsageError]] = []
    for target, recipe in plan:
        try:
            own = carried_recipe(target, recipe, quantized)
        except CannotCarry as exc:
            if target in explicit:
                raise
            left_out.append((target, exc))
            continue
        if (target, own) not in composed:
            composed.append((target, own))
    if not composed:
        raise left_out[0][1]
    skipped = {t: Availability(t, refusal=exc.message) for t, exc in left_out}
    return composed, list(skipped.values())


def _carriers(target: str, quantized: str) -> list[Recipe]:
    """The target's recipes declaring they carry ``quantized``, "same" before "closest"."""
    declared = [r for r in builtin_recipes(target).values() if quantized in r.carries]
    return sorted(declared, key=lambda r: (not r.supported, r.carries[quantized] != "same", r.name))


def carried_recipe(target: str, recipe: Recipe, quantized: str) -> Recipe:
    """The recipe ``target`` ships a model quantized as ``quantized`` with (the requested
    ``recipe`` must be the float one or that recipe itself, or a recipe file that declares it
    carries it, e.g. to gate quality against float with a ``[goal]``), or CannotCarry naming
    the targets that can."""
    if quantized in recipe.carries and recipe.supported:
        return recipe
    carriers = _carriers(target, quantized)
    own = carriers[0] if carriers and carriers[0].supported else None
    if own is None:
        able = [t for t in target_names() if any(r.supported for r in _carriers(t, quantized))]
        why = "; ".join(f"{r.name}: {r.unsupported}" for r in carriers) or "no recipe carries it"
        raise CannotCarry(f"target {target} cannot carry a {quantized} model ({why})",
                          hint=f"targets that can: {', '.join(able)}")
    if recipe.name not in (FLOAT_RECIPE, own.name):
        raise UsageError(f"the model is already quantized ({quantized}); --recipe {recipe.name} "
                         f"({target}) would quantize it again",
                         hint=f"pass no --recipe: it ships as {target}'s {own.name!r}")
    return own


def refuse_dynamic(targets: list[str]) -> None:
    """--dynamic on a target whose exporter declares it cannot take dynamic dimensions."""
    from edge_export.build.exporter import exporter_class

    for target in targets:
        reason = exporter_class(target).dynamic_dims_refusal
        if reason:
            able = [t for t in target_names() if not exporter_class(t).dynamic_dims_refusal]
            raise UsageError(f"target {target} cannot take --dynamic: {reason}",
                             hint=f"targets that can: {', '.join(able)}; or export {target} with static shapes")
