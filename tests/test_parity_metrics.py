"""Parity metrics and gates, checked against values computed by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from edge_export.quant.recipe import Thresholds
from edge_export.verify.parity import SNR_CAP_DB, gate, output_metrics


def test_identical_outputs_are_perfect():
    ref = [np.array([[1.0, -2.0, 3.0]], np.float32)]
    m = output_metrics(ref, [r.copy() for r in ref])
    assert m == {"max_abs": 0.0, "mean_abs": 0.0, "cosine": 1.0, "snr_db": SNR_CAP_DB,
                 "top1_agreement": 1.0}


def test_known_error():
    ref = [np.array([[3.0, 4.0]])]
    act = [np.array([[3.0, 5.0]])]
    m = output_metrics(ref, act)
    assert m["max_abs"] == 1.0 and m["mean_abs"] == 0.5
    assert m["snr_db"] == pytest.approx(10 * math.log10(25 / 1))
    assert m["cosine"] == pytest.approx((9 + 20) / (5 * math.sqrt(34)))
    assert m["top1_agreement"] == 1.0


def test_top1_disagreement_counted_per_sample():
    ref = [np.array([[0.0, 1.0]]), np.array([[1.0, 0.0]])]
    act = [np.array([[0.0, 1.0]]), np.array([[0.0, 1.0]])]
    assert output_metrics(ref, act)["top1_agreement"] == 0.5


def test_non_finite_output_fails_every_metric():
    ref = [np.array([[1.0, 2.0]])]
    m = output_metrics(ref, [np.array([[np.inf, 2.0]])])
    assert m["snr_db"] == -SNR_CAP_DB and m["cosine"] == 0.0


def test_gate_names_worst_output_and_threshold():
    ref = [[np.array([[1.0, 2.0]]), np.array([[5.0, 5.0]])]]
    act = [[np.array([[1.0, 2.0]]), np.array([[5.0, -5.0]])]]
    result = gate(["a", "b"], ref, act, Thresholds(cosine=0.99), "rt", "pytorch-float")
    assert result.status == "failed"
    assert "'b'" in result.reason and "cosine" in result.reason and ">= 0.99" in result.reason


@settings(max_examples=50, deadline=None)
@given(arrays(np.float64, (4, 3), elements=st.floats(-100, 100)),
       st.floats(0.5, 2.0))
def test_scaling_keeps_cosine(ref, scale):
    if np.linalg.norm(ref) < 1e-6:
        return
    m = output_metrics([ref], [ref * scale])
    assert m["cosine"] == pytest.approx(1.0, abs=1e-9)
    expected = 10 * math.log10(1 / (scale - 1) ** 2) if scale != 1 else SNR_CAP_DB
    assert m["snr_db"] == pytest.approx(min(expected, SNR_CAP_DB), abs=1e-6)
