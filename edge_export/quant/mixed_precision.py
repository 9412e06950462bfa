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
    the attempts and the per-layer sensitivities recorded in ``parity["layers"]``."""
    from edge_export.quant.sensitivity import estimate_keep

    sim, record = measure(program, recipe, ctx, inputs, reference)
    order = list(record["snr_db_alone"])
    n = record["samples"]
    k0, simulated = estimate_keep(sim, inputs[:n], reference[:n], order,
                                  recipe.parity.snr_db, recipe.parity.cosine)
    attempts: list[dict[str, Any]] = []
    result = None
    lowered = 0
    for k in candidates(k0, len(order)):
        keep = order[:k]
        concrete = with_keep_float(recipe, keep)
        prepared = quantize(concrete)
        if reference_passes and getattr(prepared, "reference", None) is not None and k < len(order):
            ok, metrics = reference_passes(prepared)
            attempts.append({"kept": k, "checked_on": "pytorch-quantized reference", **metrics,
                             "passed": ok})
            if not ok:
                continue
        result = lower_and_verify(prepared, concrete)
        lowered += 1
        parity = result[0]
        worst = _worst_metrics(parity)
        attempts.append({"kept": k, "checked_on": parity.get("runtime", "artifact"), **worst,
                         "passed": parity["status"] == "passed"})
        if parity["status"] != "failed" or lowered >= MAX_ARTIFACTS:
            break
    assert result is not None  # the last candidate (every layer float) is always lowered
    parity = result[0]
    record["keep_float"] = {"mode": AUTO, "chosen": list(keep), "of_layers": len(order),
                            "simulated_estimate": k0, "simulated": simulated,
                            "attempts": attempts}
    parity["layers"] = record
    if parity["status"] == "failed":
        note = worst_layer_note(record)
        parity["reason"] = (f"{parity['reason']}; keep_float auto kept {len(keep)} of {len(order)} "
                            f"layers float" + (f"; {note}" if note else ""))
    return result


def _worst_metrics(parity: dict[str, Any]) -> dict[str, float]:
    outputs = parity.get("outputs") or {}
    if not outputs:
        return {}
    snr = min(m.get("snr_db", 0.0) for m in outputs.values())
    cos = min(m.get("cosine", 0.0) for m in outputs.values())
    return {"snr_db": round(snr, 2), "cosine": round(cos, 6)}
