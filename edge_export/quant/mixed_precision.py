"""``keep_float = "auto"`` (gate-driven mixed precision) and divergence localization.

Both use the per-layer sensitivity of ``edge_export.quant.sensitivity``. Auto ranks the layers
by how much each loses alone, estimates in simulation how many of the worst must stay
float, then lets the target decide: each candidate set is quantized by the target's own
scheme, checked first on its PyTorch reference where the scheme has one (PT2E: cheap, no
lowering), then lowered and gated on the target runtime; the first set whose artifact
passes the recipe's parity gate ships. A failed gate of any quantized recipe names the
layer that loses most. Target-agnostic: the exporter only has to honour ``keep_float``
(``SchemeTable.register(..., keep_float=True)``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from edge_export.quant.mechanisms import AUTO, with_keep_float

MEASURE_SAMPLES = 8  # parity samples the simulation runs on (each layer costs one pass per sample)
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


def build_auto(program: Any, recipe: Any, ctx: Any, inputs: Sequence[tuple[np.ndarray, ...]],
               reference: list[list[np.ndarray]],
               quantize: Callable[[Any], Any],
               reference_passes: Callable[[Any], tuple[bool, dict[str, float]]] | None,
               lower_and_verify: Callable[[Any, Any], tuple[dict[str, Any], Any, Any]],
               ) -> tuple[dict[str, Any], Any, Any]:
    """Quantize → (reference check) → lower → verify with growing keep-float sets; returns the
    verify results of the first passing candidate (or of the last one tried), with the choice,
    the attempts and the per-layer sensitivities recorded in ``parity["layers"]``.

    The recipe as it is (nothing kept) is tried first, and a model that passes so pays for
    nothing else. Otherwise the per-layer sensitivities are measured. The simulation rounds weights to
    nearest, while the scheme may round better (GPTQ, bias correction), so the simulation
    alone overestimates what must stay float (EfficientNet-Lite0: 14 dB simulated, 24 dB
    real). Its measured quality then calibrates the simulation: the estimate is the fewest
    layers whose simulated gain closes the gap between the measured quality and the gate."""
    from edge_export.quant.sensitivity import estimate_keep, quality

    order: list[str] = []  # the layers, most sensitive first (measured only when needed)
    record: dict[str, Any] = {}
    attempts: list[dict[str, Any]] = []
    lowered = 0

    def attempt(k: int, lower: bool = False) -> tuple[bool, dict[str, float], Any]:
        """Keep the k worst layers float; lowered only if its PyTorch reference passes (or
        ``lower``, or no reference models the artifact, or every layer is kept)."""
        nonlocal lowered
        concrete = with_keep_float(recipe, order[:k])
        prepared = quantize(concrete)
        if not lower and reference_passes and getattr(prepared, "reference", None) is not None \
                and k < len(order):
            ok, metrics = reference_passes(prepared)
            attempts.append({"kept": k, "checked_on": "pytorch-quantized reference", **metrics, "passed": ok})
            if not ok:
                return False, metrics, None
        result = lower_and_verify(prepared, concrete)
        lowered += 1
        parity = result[0]
        metrics = _worst_metrics(parity)
        attempts.append({"kept": k, "checked_on": parity.get("runtime", "artifact"), **metrics,
                         "passed": parity["status"] == "passed"})
        return parity["status"] != "failed", metrics, result

    passed, measured, result = attempt(0)
    keep: list[str] = []  # the set whose artifact ``result`` is
    last = 0
    simulated: list[dict[str, float]] = []
    k0 = 0
    if not passed:
        sim, record = measure(program, recipe, ctx, inputs, reference)
        order, n = list(record["snr_db_alone"]), record["samples"]
    if not passed and order:
        snr_goal, cos_goal = calibrated_goals(recipe.parity.snr_db, recipe.parity.cosine, measured,
                                              quality(reference[:n], [sim.outputs(s, order) for s in inputs[:n]]))
        k0, simulated = estimate_keep(sim, inputs[:n], reference[:n], order, snr_goal, cos_goal)
        for k in candidates(max(k0, 1), len(order)):
            if lowered >= MAX_ARTIFACTS:
                break
            last = k
            passed, _metrics, tried = attempt(k)
            if tried is not None:
                result, keep = tried, order[:k]
            if passed:
                break
    if result is None:  # every candidate was refused by its reference: gate the last one's artifact
        passed, _metrics, result = attempt(last, lower=True)
        keep = order[:last]
    parity = result[0]
    record["keep_float"] = {"mode": AUTO, "chosen": list(keep), "of_layers": len(order),
                            "simulated_estimate": k0, "simulated": simulated, "attempts": attempts}
    parity["layers"] = record
    if parity["status"] == "failed":
        note = worst_layer_note(record)
        parity["reason"] = (f"{parity['reason']}; keep_float auto kept {len(keep)} of {len(order)} "
                            f"layers float" + (f"; {note}" if note else ""))
    return result


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
    snr = min(m.get("snr_db", 0.0) for m in outputs.values())
    cos = min(m.get("cosine", 0.0) for m in outputs.values())
    return {"snr_db": round(snr, 2), "cosine": round(cos, 6)}
