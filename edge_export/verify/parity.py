"""Verify stage: compare artifact outputs with a reference and apply a recipe's gate."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edge_export.quant.recipe import Thresholds

SNR_CAP_DB = 200.0  # reported for bit-exact outputs (JSON has no infinity)
# Top-1 agreement over a handful of samples, or over random inputs (flat logits), measures
# noise: it is gated only on class outputs with at least this many real samples.
MIN_TOP1_SAMPLES = 32
CLASS_KINDS = ("class-logits", "class-probabilities")


def output_metrics(reference: list[np.ndarray], actual: list[np.ndarray],
                   kind: str | None = None) -> dict[str, float]:
    """Metrics over all samples of one output (each list item is one sample); top-1 agreement
    for class outputs (``kind``), or, kind unknown, for any output shaped like class scores."""
    ref = np.stack([np.asarray(r, dtype=np.float64) for r in reference])
    act = np.stack([np.asarray(a, dtype=np.float64).reshape(r.shape)
                    for a, r in zip(actual, reference, strict=True)])
    err = act - ref
    finite = bool(np.isfinite(act).all())
    signal = float(np.sum(ref * ref))
    noise = float(np.sum(err * err)) if finite else math.inf
    if noise == 0.0:
        snr = SNR_CAP_DB
    elif math.isinf(noise) or signal == 0.0:
        snr = -SNR_CAP_DB
    else:
        snr = min(SNR_CAP_DB, 10.0 * math.log10(signal / noise))
    a, r = act.ravel(), ref.ravel()
    denom = float(np.linalg.norm(a) * np.linalg.norm(r)) if finite else 0.0
    cosine = 1.0 if denom == 0.0 and noise == 0.0 else (float(a @ r) / denom if denom else 0.0)
    metrics = {
        "max_abs": float(np.max(np.abs(err))) if finite else math.inf,
        "mean_abs": float(np.mean(np.abs(err))) if finite else math.inf,
        "cosine": cosine,
        "snr_db": snr,
    }
    # Classification-style output: one row of >= 2 class scores per sample.
    if kind in (None, *CLASS_KINDS) and ref.ndim >= 3 and ref.shape[-1] >= 2:
        metrics["top1_agreement"] = float(np.mean(
            np.argmax(act, axis=-1) == np.argmax(ref, axis=-1)))
    return {k: _json_number(v) for k, v in metrics.items()}


def _json_number(value: float) -> float:
    return value if math.isfinite(value) else (1e308 if value > 0 else -1e308)


@dataclass
class ParityResult:
    status: str  # passed | failed | not-run
    runtime: str
    reason: str = ""
    reference: str = "pytorch-eager"
    outputs: dict[str, dict[str, float]] = field(default_factory=dict)
    thresholds: dict[str, float] = field(default_factory=dict)  # the ones the gate applies
    # The recipe's other thresholds, reported but not gated: {key: {"value", "why"}}.
    not_applied: dict[str, dict[str, Any]] = field(default_factory=dict)
    top1: str = ""  # why top-1 agreement was or was not gated

    def to_json(self) -> dict[str, Any]:
        return {"status": self.status, "runtime": self.runtime, "reason": self.reason,
                "reference": self.reference, "thresholds": self.thresholds,
                "not_applied": self.not_applied, "outputs": self.outputs, "top1_gate": self.top1}


def top1_policy(kinds: list[str], samples: int, real_inputs: bool) -> tuple[bool, str]:
    """(gate top-1?, the sentence parity.json records about it)."""
    if not any(k in CLASS_KINDS for k in kinds):
        return False, "no class output: gated on cosine and SNR only"
    if not real_inputs:
        return False, "reported, not gated: parity inputs are random (pass --validation-data)"
    if samples < MIN_TOP1_SAMPLES:
        return False, (f"reported, not gated: {samples} samples < {MIN_TOP1_SAMPLES} "
                       "(raise --parity-samples)")
    return True, f"gated on class outputs over {samples} real samples"


def gate_terms(thresholds: Thresholds, kinds: list[str] | None, samples: int,
               real_inputs: bool) -> dict[str, Any]:
    """The recipe's thresholds split into those this gate applies and those it only reports
    (with why), as ``ParityResult`` fields: a manifest must not list a threshold as its gate
    when the gate skipped it. Only top-1 agreement is ever skipped (see ``top1_policy``)."""
    gate_top1, note = top1_policy(kinds or [], samples, real_inputs)
    applied = thresholds.to_json()
    not_applied = {}
    if "top1_agreement" in applied and not gate_top1:
        not_applied["top1_agreement"] = {"value": applied.pop("top1_agreement"), "why": note}
    return {"thresholds": applied, "not_applied": not_applied, "top1": note}


def threshold_violations(outputs: dict[str, dict[str, Any]], thresholds: Thresholds,
                         gate_top1: bool) -> list[tuple[str, str, float, float]]:
    """(output, metric, value, limit) for every metric on the wrong side of its threshold."""
    violations = []
    for name, m in outputs.items():
        for key, limit in thresholds.to_json().items():
            if key not in m or (key == "top1_agreement" and not gate_top1):
                continue
            if m[key] > limit if key == "max_abs" else m[key] < limit:
                violations.append((name, key, m[key], limit))
    return violations


def meets(parity: dict[str, Any], thresholds: Thresholds) -> bool:
    """Would a gated result (``ParityResult.to_json()``) also pass ``thresholds``? Top-1 counts
    only where the gate counted it (real inputs, enough samples)."""
    gated_top1 = parity.get("top1_gate", "").startswith("gated")
    return not threshold_violations(parity.get("outputs") or {}, thresholds, gated_top1)


def gate(names: list[str], reference: list[list[np.ndarray]], actual: list[list[np.ndarray]],
         thresholds: Thresholds, runtime: str, reference_name: str,
         kinds: list[str] | None = None, real_inputs: bool = True) -> ParityResult:
    """reference/actual: per sample, the list of outputs. Fails on the worst violation.
    ``kinds`` says what each output is (see workspace.output_kinds); without it every output
    is a plain tensor."""
    kinds = kinds or ["tensor"] * len(names)
    terms = gate_terms(thresholds, kinds, len(reference), real_inputs)
    outputs = {}
    for i, name in enumerate(names):
        outputs[name] = {**output_metrics([s[i] for s in reference], [s[i] for s in actual], kinds[i]),
                         "kind": kinds[i]}
    if "top1_agreement" in terms["thresholds"] and not any("top1_agreement" in m for m in outputs.values()):
        terms["not_applied"]["top1_agreement"] = {
            "value": terms["thresholds"].pop("top1_agreement"),
            "why": "no class output is a row of class scores per sample"}
    violations = threshold_violations(outputs, Thresholds(**terms["thresholds"]), gate_top1=True)
    result = ParityResult("passed", runtime, reference=reference_name, outputs=outputs, **terms)
    if violations:
        name, key, value, limit = violations[0]
        op = "<=" if key == "max_abs" else ">="
        result.status = "failed"
        result.reason = (f"output {name!r}: {key} {value:.6g} vs threshold {op} {limit:g} "
                         f"(against {reference_name})")
    return result
