"""``keep_float = "auto"`` (gate-driven mixed precision) and divergence localization.

Both use the per-layer sensitivity of ``edge_export.quant.sensitivity``. Auto ranks the layers
by how much each loses alone, estimates in simulation how many of the worst must stay
float, then lets the target decide: each candidate set is quantized by the target's own
scheme, checked first on its PyTorch reference where the scheme has one (PT2E: cheap, no
lowering), then lowered to its own artifact and gated on the target runtime; the first set
whose artifact meets the recipe's goal ships. All of that is decided on a selection split
(samples of the calibration data), and the chosen artifact is then reported on the parity
samples, which the choice never saw. A failed gate of any quantized recipe names the
layer that loses most. Target-agnostic: the exporter only has to honour ``keep_float``
(``SchemeTable.register(..., keep_float=True)``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from edge_export.quant.mechanisms import AUTO, with_keep_float

MEASURE_SAMPLES = 8  # selection samples the simulation runs on (each layer costs one pass per sample)
SELECTION_SAMPLES = 64  # calibration-data samples the choice is made on (edge_export.build.workspace)
MAX_ARTIFACTS = 4  # lowered candidates before auto gives up (each is a full lower + verify)


def is_auto(recipe: Any) -> bool:
    return recipe.param("keep_float") == AUTO


def measure(program: Any, recipe: Any, ctx: Any, inputs: Sequence[tuple[np.ndarray, ...]],
            reference: list[list[np.ndarray]]) -> tuple[Any, dict[str, Any]]:
    """(simulator, the ``layers`` record for parity.json: method and per-layer SNR alone)."""
    from edge_export.quant.sensitivity import QuantSim, sensitivities

    sim = QuantSim(program, recipe, ctx.calibration)
    n = min(MEASURE_SAMPLES, len(inputs))
    alone = sensitivities(sim, inputs[:n], reference[:n])
    record: dict[str, Any] = {"method": sim.method, "samples": n, "snr_db_alone": alone}
    if alone:
        name, snr = next(iter(alone.items()))
        record["worst"] = {"layer": name, "snr_db": snr}
    return sim, record


def worst_layer_note(record: dict[str, Any]) -> str:
    worst = record.get("worst")
    if not worst:
        return ""
    return f"worst layer: {worst['layer']} ({worst['snr_db']:.1f} dB when only it is quantized)"


def localize(program: Any, recipe: Any, ctx: Any, inputs: Sequence[tuple[np.ndarray, ...]],
             reference: list[list[np.ndarray]], parity: dict[str, Any]) -> None:
    """After a failed gate: record per-layer sensitivity and name the worst layer in the reason."""
    try:
        _sim, record = measure(program, recipe, ctx, inputs, reference)
    except Exception as exc:  # noqa: BLE001 - localization must never hide the gate failure
        parity["layers"] = {"error": f"sensitivity not measured: {type(exc).__name__}: {exc}"}
        return
    parity["layers"] = record
    note = worst_layer_note(record)
    if note:
        parity["reason"] = f"{parity['reason']}; {note}"


def candidates(k0: int, total: int) -> list[int]:
    """k0, k0+1, k0+3, k0+7, ... then every layer: the simulation is a proxy, so the real
    check walks up from its estimate with a growing step."""
    ks, step, k = [k0], 1, k0
    while k < total:
        k, step = min(total, k + step), step * 2
        ks.append(k)
    return ks


@dataclass
class Choice:
    """What auto chose: the number of layers kept float, the handle ``lower_and_check``
    returned with that candidate's check (its own artifact), and the ``layers`` record."""

    kept: int
    candidate: Any
    record: dict[str, Any]


def build_auto(program: Any, recipe: Any, ctx: Any, selection: Any,
               quantize: Callable[[Any], Any],
               reference_parity: Callable[[Any], dict[str, Any]] | None,
               lower_and_check: Callable[[Any, Any], tuple[dict[str, Any], Any]]) -> Choice:
    """Quantize → (reference check) → lower → check with growing keep-float sets until one
    meets the recipe's ``[goal]`` (its ``[parity]`` gate when it has none); chooses that
    candidate, else the one with the fewest layers kept float among those that passed the gate
    (the recipe as it is lowered for that if its reference screened it out), else the last one
    lowered. A quantization recipe is asked for its size: when no candidate
    reaches the goal, the extra float layers bought no goal, and taking the most of them would
    ship a float-sized "int8" model (EfficientNet-Lite0 on android reached every layer kept).

    Every measurement here is on ``selection`` (an ``edge_export.verify.artifact.Split``),
    never on the parity samples: the job reports the chosen artifact on those, so the
    reported parity is out of sample. Each candidate is lowered to its own artifact
    (``lower_and_check`` returns its handle), so the chosen one is the file that ships.

    The recipe as it is (nothing kept) is tried first, and a model that meets the goal so
    pays for nothing else. Otherwise the per-layer sensitivities are measured. The
    simulation rounds weights to nearest, while the scheme may round better (GPTQ, bias
    correction), so the simulation alone overestimates what must stay float
    (EfficientNet-Lite0: 14 dB simulated, 24 dB real). Its measured quality then calibrates
    the simulation: the estimate is the fewest layers whose simulated gain closes the gap
    between the measured quality and the goal."""
    from edge_export.quant.sensitivity import estimate_keep, quality
    from edge_export.verify.parity import meets

    inputs, reference = selection.inputs, selection.reference
    goal = recipe.goal or recipe.parity
    order: list[str] = []  # the layers, most sensitive first (measured only when needed)
    record: dict[str, Any] = {}
    attempts: list[dict[str, Any]] = []
    lowered: list[tuple[int, dict[str, Any], Any, bool]] = []  # (k, check, handle, goal met) when lowered

    def attempt(k: int, screen: bool = True) -> tuple[bool, dict[str, float]]:
        """Keep the k worst layers float; lowered unless its PyTorch reference (where one models
        the artifact, and ``screen``) already misses the goal. Every layer kept float is always
        lowered."""
        concrete = with_keep_float(recipe, order[:k])
        prepared = quantize(concrete)
        if (screen and reference_parity and getattr(prepared, "reference", None) is not None
                and (k < len(order) or not k)):
            checked = reference_parity(prepared)
            metrics = _worst_metrics(checked)
            ok = meets(checked, goal)
            attempts.append({"kept": k, "checked_on": "pytorch-quantized reference", **metrics, "goal_met": ok})
            if not ok:
                return False, metrics
        parity, handle = lower_and_check(prepared, concrete)
        metrics = _worst_metrics(parity)
        ok = parity["status"] != "failed" and meets(parity, goal)
        lowered.append((k, parity, handle, ok))
        attempts.append({"kept": k, "checked_on": parity.get("runtime", "artifact"), **metrics,
                         "passed": parity["status"] != "failed", "goal_met": ok,
                         "artifact_sha256": (parity.get("artifact") or {}).get("sha256")})
        return ok, metrics

    met, measured = attempt(0)
    simulated: list[dict[str, float]] = []
    k0 = 0
    if not met:
        sim, record = measure(program, recipe, ctx, inputs, reference)
        order, n = list(record["snr_db_alone"]), record["samples"]
        if order:
            snr_goal, cos_goal = calibrated_goals(goal.snr_db, goal.cosine, measured,
                                                  quality(reference[:n], [sim.outputs(s, order) for s in inputs[:n]]))
            k0, simulated = estimate_keep(sim, inputs[:n], reference[:n], order, snr_goal, cos_goal)
            for k in candidates(max(k0, 1), len(order)):
                if len(lowered) >= MAX_ARTIFACTS:
                    break
                met, _metrics = attempt(k)
                if met:
                    break
    if not met and all(k for k, *_ in lowered):
        # No candidate met the goal and the recipe as it is was screened out on its PyTorch
        # reference: lower it too, since the smallest candidate that passes the gate ships.
        met, _metrics = attempt(0, screen=False)
    chosen = ([c for c in lowered if c[3]] or [c for c in lowered if c[1]["status"] != "failed"] or lowered[-1:])
    kept, checked, handle, _ = min(chosen, key=lambda c: c[0])
    record["keep_float"] = {"mode": AUTO, "chosen": order[:kept], "of_layers": len(order) or None,
                            "goal": goal.to_json(), "goal_met": met,
                            "selection": {**selection.describe(), **_worst_metrics(checked),
                                          "passed": checked["status"] != "failed"},
                            "simulated_estimate": k0, "simulated": simulated, "attempts": attempts}
    return Choice(kept, handle, record)


def report_choice(choice: Choice, recipe: Any, parity: dict[str, Any]) -> None:
    """Attach the choice to the reported parity (of the chosen artifact on the parity samples):
    whether the goal holds there too, and on a failed gate how many layers were kept."""
    from edge_export.verify.parity import meets

    record = choice.record
    record["keep_float"]["reported_goal_met"] = (parity["status"] != "failed"
                                                 and meets(parity, recipe.goal or recipe.parity))
    parity["layers"] = record
    if parity["status"] == "failed":
        note = worst_layer_note(record)
        parity["reason"] = (f"{parity['reason']}; keep_float auto kept {choice.kept} of "
                            f"{record['keep_float']['of_layers'] or 0} layers float" + (f"; {note}" if note else ""))


def calibrated_goals(snr_gate: float | None, cos_gate: float | None, measured: dict[str, float],
                     simulated: tuple[float, float]) -> tuple[float | None, float | None]:
    """The gate moved onto the simulation's scale: the simulation's error (SNR in dB, 1 - cosine)
    is assumed a fixed multiple of the real one, measured with nothing kept float."""
    sim_snr, sim_cos = simulated
    snr_goal = cos_goal = None
    if snr_gate is not None:
        real = measured.get("snr_db")
        snr_goal = snr_gate if real is None or not np.isfinite(sim_snr) else snr_gate - (real - sim_snr)
    if cos_gate is not None:
        real = measured.get("cosine")
        if real is None or real >= 1.0 or sim_cos >= 1.0:
            cos_goal = cos_gate
        else:
            cos_goal = 1.0 - (1.0 - cos_gate) * (1.0 - sim_cos) / (1.0 - real)
    return snr_goal, cos_goal


def _worst_metrics(parity: dict[str, Any]) -> dict[str, float]:
    outputs = parity.get("outputs") or {}
    if not outputs:
        return {}
    worst = {"snr_db": round(min(m.get("snr_db", 0.0) for m in outputs.values()), 2),
             "cosine": round(min(m.get("cosine", 0.0) for m in outputs.values()), 6)}
    top1 = [m["top1_agreement"] for m in outputs.values() if "top1_agreement" in m]
    return {**worst, "top1_agreement": round(min(top1), 4)} if top1 else worst
