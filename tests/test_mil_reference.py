"""Tests for the numpy reference executor of Core ML ML Programs.

Every end-to-end case converts a small torch model with coremltools, saves it
as an .mlpackage, reloads it with ``mil.load`` and compares
``Program.run`` with PyTorch. Converted programs are cached per module because
``ct.convert`` costs ~0.5 s each.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from edge_export.exporters.coreml import mil as mr
from edge_export.exporters.coreml.decompositions import decompose_for_coreml
from edge_export.exporters.coreml.mil import conv as mil_conv
from edge_export.exporters.coreml.mil import elementwise, registry, resize
from edge_export.exporters.coreml.mil.program import coremltools, quiet
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

FP32, FP16 = "fp32", "fp16"


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ct() -> Any:
    return coremltools()


class Converter:
    """Convert torch modules / MIL programs to saved .mlpackages and load them."""

    def __init__(self, ct: Any, root: Path) -> None:
        self.ct = ct
        self.root = root
        self.count = 0
        self._cache: dict[tuple, Any] = {}

    def _save(self, mlmodel: Any) -> mr.Program:
        self.count += 1
        path = self.root / f"m{self.count}.mlpackage"
        mlmodel.save(str(path))
        return mr.load(path)

    def mlmodel(self, model: nn.Module, args: tuple, precision: str = FP32, target: str = "iOS17") -> Any:
        ct = self.ct
        with quiet():
            ep = decompose_for_coreml(torch.export.export(model.eval(), args))
            return ct.convert(
                ep,
                convert_to="mlprogram",
                compute_precision=ct.precision.FLOAT32 if precision == FP32 else ct.precision.FLOAT16,
                minimum_deployment_target=getattr(ct.target, target),
            )

    def cached_mlmodel(self, key: str, model: nn.Module, args: tuple, precision: str, target: str) -> Any:
        """Convert once per (key, precision, target); compression returns new models."""
        k = (key, precision, target)
        if k not in self._cache:
            self._cache[k] = self.mlmodel(model, args, precision, target)
        return self._cache[k]

    def torch(self, model: nn.Module, args: tuple, precision: str = FP32, target: str = "iOS17") -> mr.Program:
        return self._save(self.mlmodel(model, args, precision, target))

    def mil(self, build: Callable, input_specs: list, precision: str = FP32, target: str = "iOS17") -> mr.Program:
        """Convert a MIL builder function (for ops torch never emits)."""
        ct = self.ct
        from coremltools.converters.mil import Builder as mb

        prog = mb.program(input_specs=input_specs, opset_version=getattr(ct.target, target))(build)
        with quiet():
            mlmodel = ct.convert(
                prog,
                convert_to="mlprogram",
                compute_precision=ct.precision.FLOAT32 if precision == FP32 else ct.precision.FLOAT16,
                minimum_deployment_target=getattr(ct.target, target),
            )
        return self._save(mlmodel)


@pytest.fixture(scope="module")
def conv(ct: Any, tmp_path_factory: pytest.TempPathFactory) -> Converter:
    return Converter(ct, tmp_path_factory.mktemp("mlpackages"))


def run(program: mr.Program, *args: torch.Tensor) -> list[np.ndarray]:
    feeds = {name: a.numpy() for name, a in zip(program.input_names, args)}
    out = program.run(feeds)
    return [out[name] for name in program.output_names]


def reference(model: nn.Module, *args: torch.Tensor) -> list[np.ndarray]:
    with torch.no_grad():
        out = model.eval()(*args)
    outs = out if isinstance(out, (tuple, list)) else (out,)
    return [o.numpy() for o in outs]


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-30))


def assert_matches(
    conv: Converter,
    model: nn.Module,
    args: tuple,
    precision: str = FP32,
    rtol: float | None = None,
    atol: float | None = None,
    target: str = "iOS17",
) -> mr.Program:
    program = conv.torch(model, args, precision, target)
    assert program.compute_precision == ("float32" if precision == FP32 else "float16")
    got, want = run(program, *args), reference(model, *args)
    assert len(got) == len(want)
    if rtol is None:
        rtol = 1e-4 if precision == FP32 else 2e-2
    if atol is None:
        atol = 1e-5 if precision == FP32 else 2e-2
    for i, (g, w) in enumerate(zip(got, want)):
        assert g.shape == w.shape, f"output {i}"
        if w.dtype == np.bool_ or np.issubdtype(w.dtype, np.integer):
            np.testing.assert_array_equal(g, w.astype(g.dtype), err_msg=f"output {i}")
        else:
            np.testing.assert_allclose(g.astype(np.float32), w, rtol=rtol, atol=atol, err_msg=f"output {i}")
    return program


class Fn(nn.Module):
    """Wrap a function of tensors as a module (parameter-free ops)."""

    def __init__(self, fn: Callable[..., Any]) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, *xs: torch.Tensor) -> Any:
        return self.fn(*xs)


def randn(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


# --------------------------------------------------------------------------
# API surface (no conversion)
# --------------------------------------------------------------------------


def test_supported_op_table_matches_supported_ops() -> None:
    table = mr.supported_op_table()
    assert [op for op, _ in table] == sorted(mr.supported_ops())
    assert all(note for _, note in table)
    for op in ("conv", "linear", "matmul", "softmax", "layer_norm", "gelu", "constexpr_lut_to_dense"):
        assert op in mr.supported_ops()


def test_supported_ops_are_real_mil_ops(ct: Any) -> None:
    from coremltools.converters.mil.mil.ops.registry import SSAOpRegistry

    # coreml_update_state is a coremltools dialect op: serialised as write_state, loaded back as itself.
    assert set(SSAOpRegistry.core_ops) | set(SSAOpRegistry.dialect_ops) >= mr.supported_ops()


def test_unsupported_ops_exception_sorts_and_dedups() -> None:
    exc = mr.UnsupportedOps(["lstm", "crop", "lstm"])
    assert exc.ops == ("crop", "lstm")
    assert "crop" in str(exc) and "lstm" in str(exc)


# --------------------------------------------------------------------------
# numpy kernels against torch directly (cheap, so hypothesis can explore)
# --------------------------------------------------------------------------


def _step(out_shape: tuple[int, ...] | None = None) -> Any:
    return registry.Step("test", "test", elementwise._identity, (), ("y",), (np.dtype(np.float32),), (out_shape,))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    rank=st.sampled_from([1, 2, 3]),
    groups=st.sampled_from([1, 2, 4]),
    k=st.integers(1, 3),
    stride=st.integers(1, 3),
    dilation=st.integers(1, 2),
    pad=st.integers(0, 2),
    size=st.integers(5, 8),
    pad_type=st.sampled_from(["custom", "valid", "same"]),
    c_out=st.sampled_from([4, 8]),  # 4 with groups=4: depthwise (its own code path)
)
def test_conv_kernel_matches_torch(rank, groups, k, stride, dilation, pad, size, pad_type,
                                   c_out) -> None:
    x = randn(2, 4, *[size] * rank)
    w = randn(c_out, 4 // groups, *[k] * rank, seed=1)
    b = randn(c_out, seed=2)
    if pad_type == "same":
        stride = 1
        total = (k - 1) * dilation
        pads = [total // 2, total - total // 2] * rank
    else:
        pads = [pad] * 2 * rank if pad_type == "custom" else [0] * 2 * rank
    a = {
        "x": x.numpy(),
        "weight": w.numpy(),
        "bias": b.numpy(),
        "strides": [stride] * rank,
        "dilations": [dilation] * rank,
        "groups": groups,
        "pad_type": pad_type,
        "pad": pads,
    }
    torch_conv = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[rank]
    xp = F.pad(x, [p for i in reversed(range(rank)) for p in (pads[2 * i], pads[2 * i + 1])])
    want = torch_conv(xp, w, b, stride=stride, dilation=dilation, groups=groups).numpy()
    np.testing.assert_allclose(mil_conv._conv(a, _step()), want, rtol=1e-4, atol=1e-4)


@settings(max_examples=30, deadline=None)
@given(
    rank=st.sampled_from([1, 2]),
    groups=st.sampled_from([1, 2]),
    k=st.integers(1, 4),
    stride=st.integers(1, 3),
    dilation=st.integers(1, 2),
    pad=st.integers(0, 1),
)
def test_conv_transpose_kernel_matches_torch(rank, groups, k, stride, dilation, pad) -> None:
    x = randn(1, 4, *[5] * rank)
    w = randn(4, 6 // groups, *[k] * rank, seed=1)
    a = {
        "x": x.numpy(),
        "weight": w.numpy(),
        "strides": [stride] * rank,
        "dilations": [dilation] * rank,
        "groups": groups,
        "pad_type": "custom",
        "pad": [pad] * 2 * rank,
    }
    fn = {1: F.conv_transpose1d, 2: F.conv_transpose2d}[rank]
    want = fn(x, w, stride=stride, padding=pad, dilation=dilation, groups=groups).numpy()
    np.testing.assert_allclose(mil_conv._conv_transpose(a, _step()), want, rtol=1e-4, atol=1e-4)


@settings(max_examples=40, deadline=None)
@given(
    kind=st.sampled_from(["max", "avg_incl", "avg_excl"]),
    k=st.integers(1, 4),
    stride=st.integers(1, 3),
    pad=st.integers(0, 2),
    ceil_mode=st.booleans(),
    size=st.integers(4, 9),
)
def test_pool_kernels_match_torch(kind, k, stride, pad, ceil_mode, size) -> None:
    pad = min(pad, k // 2)
    x = randn(1, 3, size, size + 1)
    a = {
        "x": x.numpy(),
        "kernel_sizes": [k, k],
        "strides": [stride, stride],
        "pad_type": "custom",
        "pad": [pad] * 4,
        "ceil_mode": ceil_mode,
        "exclude_padding_from_average": kind == "avg_excl",
    }
    if kind == "max":
        want = F.max_pool2d(x, k, stride, pad, ceil_mode=ceil_mode).numpy()
        got = mil_conv._max_pool(a, _step())
    else:
        want = F.avg_pool2d(x, k, stride, pad, ceil_mode=ceil_mode, count_include_pad=kind == "avg_incl").numpy()
        got = mil_conv._avg_pool(a, _step())
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_erf_accuracy() -> None:
    x = torch.linspace(-6, 6, 20001, dtype=torch.float64)
    np.testing.assert_allclose(elementwise._erf(x.numpy()), torch.erf(x).numpy(), atol=2e-7)


# --------------------------------------------------------------------------
# per-op end-to-end: torch -> .mlpackage -> executor
# --------------------------------------------------------------------------

X = randn(2, 3, 8, 8)
POS = X.abs() + 0.1

ELEMENTWISE: dict[str, tuple[Callable[..., Any], tuple]] = {
    "unary": (
        lambda x, p: (
            x.abs(),
            torch.exp(x),
            torch.log(p),
            torch.sqrt(p),
            torch.rsqrt(p),
            torch.sin(x),
            torch.cos(x),
            torch.tanh(x),
            torch.erf(x),
            x**2,
            torch.atan(x),
            p**0.5,
            torch.asin(x.clamp(-1, 1)),
        ),
        (X, POS),
    ),
    "activations": (
        lambda x: (
            F.relu(x),
            F.relu6(x * 4),
            torch.sigmoid(x),
            F.silu(x),
            F.softplus(x),
            F.elu(x),
            F.leaky_relu(x, 0.1),
            torch.clamp(x, -0.5, 0.7),
            F.hardtanh(x),
            F.hardsigmoid(x),
            F.hardswish(x),
            F.softsign(x),
            F.mish(x),
            F.selu(x),
            F.prelu(x, torch.tensor([0.1, 0.2, 0.3])),
            F.gelu(x),
        ),
        (X,),
    ),
    "binary": (
        lambda x, y: (
            x + y,
            x - y,
            x * y,
            x / (y.abs() + 0.5),
            torch.maximum(x, y),
            torch.minimum(x, y),
            torch.pow(x.abs() + 0.1, y),
            torch.where(x > y, x, y),
            x * 2.5 + 1,
            x + y[0, 0, 0],
        ),
        (X, randn(1, 3, 1, 8, seed=3)),
    ),
    "softmax_reductions": (
        lambda x: (
            F.softmax(x, -1),
            F.log_softmax(x, 1),
            x.sum((2, 3)),
            x.mean(-1, keepdim=True),
            x.amax(1),
            x.amin((0, 2)),
            x.norm(dim=-1),
            torch.logsumexp(x, -1),
            x.argmax(-1).float(),
            x.argmin(1).float(),
            x.var(-1),
            x.std(1),
        ),
        (X,),
    ),
    "linear_matmul_einsum": (
        lambda x, w: (
            x @ w,
            torch.matmul(x[0, 0], w[0, 0]),
            torch.bmm(x[0], w[0].transpose(1, 2)),
            torch.einsum("bchw,bcwk->bchk", x, w),
            F.linear(x, w[0, 0], w[0, 1, :, 0]),
            x[0, 0, 0] @ w[0, 0],
        ),
        (X, randn(2, 3, 8, 8, seed=5)),
    ),
    "shape_ops": (
        lambda x: (
            x.reshape(2, -1),
            x.permute(0, 2, 3, 1),
            torch.cat([x, x * 2], 1),
            *torch.split(x, [3, 5], -1),
            x[:, 1:, ::2, 1:-1:3],
            x[..., -1],
            x.unsqueeze(1).squeeze(1),
            x.flip(-1),
            x.repeat(1, 2, 1, 1),
            torch.stack([x, -x], 2),
            x.transpose(1, 3).contiguous(),
            x.expand(2, 3, 8, 8) * 1,
            torch.chunk(x, 2, 2)[1],
            x.flatten(1),
            torch.tril(x),
            torch.triu(x, 1),
            torch.cumsum(x, -1),
            x[:, :, 2],
            x.narrow(2, 1, 3),
        ),
        (X,),
    ),
    "gather_index": (
        lambda x, i: (
            torch.gather(x, -1, i),
            x[:, :, torch.tensor([0, 5, 7])],
            torch.index_select(x, 1, torch.tensor([2, 0])),
            torch.topk(x, 3, -1).values,
            torch.sort(x, -1).values,
            x.masked_fill(x > 0.5, -1.0),
        ),
        (X, torch.randint(0, 8, (2, 3, 8, 4), generator=torch.Generator().manual_seed(6))),
    ),
    "pad_modes": (
        lambda x: (
            F.pad(x, (1, 2, 0, 1)),
            F.pad(x, (2, 1, 1, 2), value=0.5),
            F.pad(x, (2, 1, 1, 2), mode="reflect"),
            F.pad(x, (1, 3, 2, 0), mode="replicate"),
        ),
        (X,),
    ),
    "resize": (
        lambda x: (
            F.interpolate(x, scale_factor=2, mode="nearest"),
            F.interpolate(x, size=(12, 5), mode="nearest"),
            F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False),
            F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True),
            F.interpolate(x, size=(13, 11), mode="bilinear", align_corners=False),
            F.pixel_shuffle(x[:, :1].repeat(1, 4, 1, 1), 2),
            F.pixel_unshuffle(x, 2),
        ),
        (X,),
    ),
}


NUMERIC_FAMILIES = ("unary", "activations", "binary", "softmax_reductions", "linear_matmul_einsum", "resize")


@pytest.mark.parametrize(
    ("family", "precision"),
    [(f, FP32) for f in sorted(ELEMENTWISE)] + [(f, FP16) for f in NUMERIC_FAMILIES],
)
def test_op_family(conv: Converter, family: str, precision: str) -> None:
    fn, args = ELEMENTWISE[family]
    assert_matches(conv, Fn(fn), args, precision)


def _discontinuous(x: torch.Tensor, y: torch.Tensor) -> tuple:
    return (
        torch.floor(x * 3),
        torch.ceil(x * 3),
        torch.round(x * 3),
        torch.sign(x),
        torch.floor_divide(x * 4, y.abs() + 0.5),
        torch.remainder(x * 4, y.abs() + 0.5),
        (x > y).float(),
        (x <= y).float(),
        (x == x).float(),
        torch.logical_and(x > 0, y > 0).float(),
        torch.logical_or(x > 0, y > 0).float(),
        torch.logical_not(x > 0).float(),
        torch.logical_xor(x > 0, y > 0),
        x.argmax(-1),
        (x > 0).sum(-1),
    )


def test_discontinuous_ops_fp32(conv: Converter) -> None:
    """Step functions: exact in fp32 (fp16 rounding legitimately flips some elements)."""
    assert_matches(conv, Fn(_discontinuous), (X, randn(1, 3, 1, 8, seed=4)), FP32)


def test_gelu_follows_the_converted_mode(conv: Converter) -> None:
    """coremltools 9 + torch.export drops gelu's approximate="tanh" kwarg (converts EXACT):
    the executor must follow the mode recorded in the program, not torch."""
    program = conv.torch(Fn(lambda x: F.gelu(x, approximate="tanh")), (X,))
    (mode,) = [v for k, v in program._consts.items() if isinstance(v, str) and "gelu" in k]
    want = F.gelu(X, approximate="tanh" if mode == "TANH_APPROXIMATION" else "none").numpy()
    np.testing.assert_allclose(run(program, X)[0], want, rtol=1e-5, atol=1e-6)


def test_reciprocal_keeps_mil_epsilon(conv: Converter) -> None:
    """torch.reciprocal becomes MIL inverse(epsilon=1e-4): the executor reproduces 1 / (x + 1e-4)."""
    program = conv.torch(Fn(torch.reciprocal), (POS,))
    np.testing.assert_allclose(run(program, POS)[0], 1 / (POS.numpy() + 1e-4), rtol=1e-6)


class Norms(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(3)
        self.inorm = nn.InstanceNorm2d(3, affine=True)
        self.ln = nn.LayerNorm([8, 8])
        self.gn = nn.GroupNorm(3, 3)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.rand_like(p) + 0.5)
            self.bn.running_mean.uniform_(-1, 1)
            self.bn.running_var.uniform_(0.5, 2)

    def forward(self, x: torch.Tensor) -> tuple:
        return self.bn(x), self.inorm(x), self.ln(x), self.gn(x), F.normalize(x, dim=1)


@pytest.mark.parametrize("precision", [FP32, FP16])
def test_normalisation(conv: Converter, precision: str) -> None:
    assert_matches(conv, Norms(), (X,), precision)


CONV_CASES = {
    "conv1d_strided_padded": (nn.Conv1d(4, 6, 3, stride=2, padding=1), (4, 11)),
    "conv2d_depthwise": (nn.Conv2d(4, 8, 3, padding=1, groups=4), (4, 9, 9)),
    "conv2d_grouped_dilated": (nn.Conv2d(4, 6, 3, padding=2, dilation=2, groups=2), (4, 9, 10)),
    "conv2d_same": (nn.Conv2d(4, 5, (3, 4), padding="same"), (4, 7, 9)),
    "conv2d_asym_stride": (nn.Conv2d(4, 5, (2, 3), stride=(2, 1), padding=(1, 0), bias=False), (4, 9, 8)),
    "conv3d": (nn.Conv3d(2, 3, 3, padding=1, stride=2), (2, 5, 6, 7)),
    "convT2d": (nn.ConvTranspose2d(4, 6, 3, stride=2, padding=1, output_padding=1), (4, 5, 6)),
    "convT2d_grouped": (nn.ConvTranspose2d(4, 6, 4, stride=2, padding=1, groups=2), (4, 5, 5)),
    "convT1d_dilated": (nn.ConvTranspose1d(4, 3, 3, stride=3, dilation=2), (4, 7)),
    "maxpool_ceil_pad": (nn.MaxPool2d(3, 2, 1, ceil_mode=True), (3, 9, 10)),
    "avgpool_excl_pad": (nn.AvgPool2d(3, 2, 1, count_include_pad=False), (3, 9, 10)),
    "avgpool_incl_pad_ceil": (nn.AvgPool2d(3, 2, 1, ceil_mode=True), (3, 10, 9)),
    "maxpool1d": (nn.MaxPool1d(2, 2), (3, 9)),
    "adaptive_avg": (nn.AdaptiveAvgPool2d(1), (3, 6, 6)),
    "adaptive_avg_2x2": (nn.AdaptiveAvgPool2d(2), (3, 8, 6)),
}


@pytest.mark.parametrize("case", sorted(CONV_CASES))
def test_conv_pool_ops(conv: Converter, case: str) -> None:
    module, shape = CONV_CASES[case]
    assert_matches(conv, module, (randn(2, *shape),), FP32)


@settings(max_examples=3, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    groups=st.sampled_from([1, 2, 4]),
    k=st.integers(1, 4),
    stride=st.integers(1, 2),
    dilation=st.integers(1, 2),
    hw=st.tuples(st.integers(6, 10), st.integers(6, 10)),
)
def test_conv2d_end_to_end_hypothesis(conv: Converter, groups, k, stride, dilation, hw) -> None:
    torch.manual_seed(0)
    module = nn.Conv2d(4, 8, k, stride=stride, dilation=dilation, padding=k // 2, groups=groups)
    assert_matches(conv, module, (randn(1, 4, *hw),), FP32)


def test_gelu_sigmoid_approximation_and_quantize_ops(conv: Converter, ct: Any) -> None:
    """Ops the torch frontend never emits, built directly with the MIL builder."""
    from coremltools.converters.mil import Builder as mb

    def build(x: Any) -> tuple:
        g = mb.gelu(x=x, mode="SIGMOID_APPROXIMATION")
        gt = mb.gelu(x=x, mode="TANH_APPROXIMATION")
        q = mb.quantize(input=x, scale=np.float32(0.05), zero_point=np.int8(3), output_dtype="int8")
        dq = mb.dequantize(input=q, scale=np.float32(0.05), zero_point=np.int8(3))
        qc = mb.quantize(
            input=x,
            scale=np.array([0.1, 0.02, 0.05], np.float32),
            zero_point=np.array([0, 10, 250], np.uint8),
            axis=1,
            output_dtype="uint8",
        )
        dqc = mb.dequantize(
            input=qc,
            scale=np.array([0.1, 0.02, 0.05], np.float32),
            zero_point=np.array([0, 10, 250], np.uint8),
            axis=1,
        )
        return g, gt, dq, dqc

    program = conv.mil(build, [mb.TensorSpec(shape=(2, 3, 8, 8))])
    x = X.numpy()
    g, gt, dq, dqc = run(program, X)
    np.testing.assert_allclose(g, x / (1 + np.exp(-1.702 * x)), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(gt, F.gelu(X, approximate="tanh").numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(dq, (np.clip(np.rint(x / 0.05 + 3), -128, 127) - 3) * 0.05, atol=1e-6)
    s = np.array([0.1, 0.02, 0.05], np.float32).reshape(1, 3, 1, 1)
    z = np.array([0, 10, 250], np.float32).reshape(1, 3, 1, 1)
    np.testing.assert_allclose(dqc, (np.clip(np.rint(x / s + z), 0, 255) - z) * s, atol=1e-6)


def test_value_preserving_ops_skip_rounding_only_when_their_input_is_rounded(conv: Converter) -> None:
    """reshape/transpose of an fp16 value (and a state's read) are not rounded again (two full copies of
    a KV cache per op); the cast that makes the fp16 value still rounds."""
    from coremltools.converters.mil import Builder as mb

    def build(x):
        half = mb.cast(x=x, dtype="fp16")
        moved = mb.transpose(x=mb.reshape(x=half, shape=(4, 6)), perm=(1, 0))
        return mb.cast(x=moved, dtype="fp32")

    program = conv.mil(build, [mb.TensorSpec(shape=(2, 3, 4))])
    x = (randn(2, 3, 4) * 1000.0 + 0.1).numpy()  # values fp16 cannot hold exactly
    (got,) = run(program, torch.from_numpy(x))
    np.testing.assert_array_equal(got, x.astype(np.float16).astype(np.float32).reshape(4, 6).T)
    assert not np.array_equal(got, x.reshape(4, 6).T)
    rounded = {step.op_type: step.rounded for step in program._steps}
    assert rounded["reshape"] and rounded["transpose"]
    assert not any(step.rounded for step in program._steps if step.op_type == "cast"
                   and step.out_dtypes[0] == np.float16)


class DynamicLength(nn.Module):
    def forward(self, x: torch.Tensor) -> tuple:
        n = x.shape[1]
        return x * torch.arange(n, dtype=torch.float32) + torch.ones(n), x.reshape(-1).cumsum(0)[-1:] + x.flip(1)


def test_dynamic_shapes(conv: Converter, ct: Any) -> None:
    """A flexible input length exercises runtime shape/gather/range_1d/fill/cumsum."""
    x = randn(1, 8)
    dims = {"x": {1: torch.export.Dim("n", min=2, max=32)}}
    with quiet():
        ep = torch.export.export(DynamicLength(), (x,), dynamic_shapes=dims).run_decompositions({})
        mlmodel = ct.convert(
            ep,
            convert_to="mlprogram",
            compute_precision=ct.precision.FLOAT32,
            minimum_deployment_target=ct.target.iOS17,
        )
    program = conv._save(mlmodel)
    assert {"shape", "range_1d", "fill"} <= program.op_types
    for n in (3, 8, 21):
        x = randn(1, n, seed=n)
        for got, want in zip(run(program, x), reference(DynamicLength(), x)):
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


# Ops the torch frontend rarely or never emits, built with the MIL builder. Each case is
# (build(x, y, u) -> Var(s), reference(x, y, u) -> array(s) or None). None means "use
# coremltools' own value_inference of the op as the oracle".
U = (torch.rand(2, 3, 6, 6, generator=torch.Generator().manual_seed(9)) * 1.8 - 0.9).numpy()


def _interp_ref(x: np.ndarray, hw: tuple[int, int], mode: str) -> np.ndarray:
    """Independent bilinear reference: np.interp along each axis at the MIL grid points."""
    gh, gw = resize._grid(mode, x.shape[-2], hw[0]), resize._grid(mode, x.shape[-1], hw[1])
    rows = np.apply_along_axis(lambda v: np.interp(gh, np.arange(v.size), v), -2, x)
    return np.apply_along_axis(lambda v: np.interp(gw, np.arange(v.size), v), -1, rows)


def _mil_cases(mb: Any) -> dict[str, tuple[Callable, Callable | None]]:
    i32 = np.int32

    def nearest(x: np.ndarray, size: tuple[int, int]) -> np.ndarray:
        return F.interpolate(torch.from_numpy(x), size=size, mode="nearest").numpy()

    def scatter_ref(x: np.ndarray, y: np.ndarray, u: np.ndarray) -> np.ndarray:
        out = x.copy()
        out[:, [2, 0]] += y[:, :2]
        return out

    def scatter_nd_ref(x: np.ndarray, y: np.ndarray, u: np.ndarray) -> np.ndarray:
        out = x.copy()
        out[1, 2] += y[0, 0]
        out[0, 0] += y[0, 1]
        return out

    def one_hot_ref(x: np.ndarray, y: np.ndarray, u: np.ndarray) -> np.ndarray:
        hot = np.argmax(x, -1)[:, None] == np.arange(6)[None, :, None, None]
        return np.where(hot, 2.0, -1.0)

    return {
        "acos": (lambda x, y, u: mb.acos(x=u), None),
        "atanh": (lambda x, y, u: mb.atanh(x=u), None),
        "cosh": (lambda x, y, u: mb.cosh(x=x), None),
        "sinh": (lambda x, y, u: mb.sinh(x=x), None),
        "tan": (lambda x, y, u: mb.tan(x=u), None),
        "exp2": (lambda x, y, u: mb.exp2(x=x), None),
        "clamped_relu": (lambda x, y, u: mb.clamped_relu(x=x, alpha=0.1, beta=1.5), None),
        "linear_activation": (lambda x, y, u: mb.linear_activation(x=x, alpha=0.5, beta=0.2), None),
        "scaled_tanh": (lambda x, y, u: mb.scaled_tanh(x=x, alpha=1.5, beta=0.7), None),
        "sigmoid_hard": (lambda x, y, u: mb.sigmoid_hard(x=x, alpha=0.3, beta=0.4), None),
        "softplus_parametric": (
            lambda x, y, u: mb.softplus_parametric(
                x=x, alpha=np.array([1, 2, 0.5], np.float32), beta=np.array([0.5, 1, 3], np.float32)
            ),
            None,
        ),
        "softsign": (lambda x, y, u: mb.softsign(x=x), None),
        "threshold": (lambda x, y, u: mb.threshold(x=x, alpha=0.3), None),
        "less": (lambda x, y, u: mb.cast(x=mb.less(x=x, y=y), dtype="fp32"), None),
        "not_equal": (
            lambda x, y, u: mb.cast(x=mb.not_equal(x=mb.round(x=x), y=mb.round(x=y)), dtype="fp32"),
            None,
        ),
        "mod": (lambda x, y, u: mb.mod(x=mb.mul(x=x, y=4.0), y=mb.add(x=mb.abs(x=y), y=0.5)), None),
        "reduce_l1_norm": (lambda x, y, u: mb.reduce_l1_norm(x=x, axes=[1, 3], keep_dims=True), None),
        "reduce_log_sum": (lambda x, y, u: mb.reduce_log_sum(x=mb.add(x=mb.abs(x=x), y=0.1), axes=[-1]), None),
        "reduce_log_sum_exp": (lambda x, y, u: mb.reduce_log_sum_exp(x=x, axes=[0, 1]), None),
        "reduce_prod": (lambda x, y, u: mb.reduce_prod(x=x, axes=[2]), None),
        "reduce_sum_square": (lambda x, y, u: mb.reduce_sum_square(x=x), None),
        "l2_norm": (lambda x, y, u: mb.l2_norm(x=x), None),
        "l2_pool": (
            lambda x, y, u: mb.l2_pool(x=x, kernel_sizes=[2, 2], strides=[2, 2], pad_type="valid"),
            lambda x, y, u: np.sqrt((x**2).reshape(2, 3, 3, 2, 3, 2).sum((3, 5))),
        ),
        "flatten2d": (lambda x, y, u: mb.flatten2d(x=x, axis=2), None),
        "gather_nd": (
            lambda x, y, u: mb.gather_nd(x=x, indices=np.array([[0, 1], [1, 2], [0, 0]], i32)),
            lambda x, y, u: x[[0, 1, 0], [1, 2, 0]],
        ),
        "gather_batch_dims": (
            lambda x, y, u: mb.gather(x=x, indices=np.array([[0, 5, 2, 1], [3, 3, 4, -1]], i32), axis=2, batch_dims=1),
            None,
        ),
        "gather_along_axis": (
            lambda x, y, u: mb.gather_along_axis(x=x, indices=np.tile(np.array([5, 0, 2], i32), (2, 3, 6, 1)), axis=3),
            None,
        ),
        "identity": (lambda x, y, u: mb.identity(x=x), None),
        "one_hot": (
            lambda x, y, u: mb.one_hot(
                indices=mb.reduce_argmax(x=x, axis=-1), one_hot_vector_size=6, axis=1, on_value=2.0, off_value=-1.0
            ),
            one_hot_ref,
        ),
        "slice_by_size": (lambda x, y, u: mb.slice_by_size(x=x, begin=[1, 0, 2, 1], size=[-1, 2, 3, 4]), None),
        "scatter": (
            lambda x, y, u: mb.scatter(
                data=x,
                indices=np.array([2, 0], i32),
                updates=mb.slice_by_size(x=y, begin=[0, 0, 0, 0], size=[2, 2, 6, 6]),
                axis=1,
                mode="add",
            ),
            scatter_ref,
        ),
        "scatter_along_axis": (
            lambda x, y, u: mb.scatter_along_axis(
                data=x,
                indices=np.tile(np.array([4, 1], i32), (2, 3, 6, 1)),
                updates=mb.slice_by_size(x=y, begin=[0, 0, 0, 0], size=[2, 3, 6, 2]),
                axis=3,
                mode="update",
            ),
            None,
        ),
        "scatter_nd": (
            lambda x, y, u: mb.scatter_nd(
                data=x,
                indices=np.array([[1, 2], [0, 0]], i32),
                updates=mb.reshape(x=mb.slice_by_size(x=y, begin=[0, 0, 0, 0], size=[1, 2, 6, 6]), shape=[2, 6, 6]),
                mode="add",
            ),
            scatter_nd_ref,
        ),
        "einsum": (
            lambda x, y, u: mb.einsum(values=(x, mb.transpose(x=y, perm=[0, 2, 3, 1])), equation="nchw,nwhu->nchu"),
            None,
        ),
        "stack": (lambda x, y, u: mb.stack(values=[x, y], axis=1), None),
        "band_part": (lambda x, y, u: mb.band_part(x=x, lower=1, upper=0), None),
        "cumsum": (  # coremltools' value_inference crashes for exclusive=True
            lambda x, y, u: mb.cumsum(x=x, axis=2, exclusive=True, reverse=True),
            lambda x, y, u: np.flip(np.cumsum(np.flip(x, 2), 2), 2) - x,
        ),
        "topk": (lambda x, y, u: mb.topk(x=x, k=3, axis=-1, ascending=True), None),
        "non_zero": (lambda x, y, u: mb.non_zero(x=mb.cast(x=mb.greater(x=x, y=1.0), dtype="fp32")), None),
        "argsort": (lambda x, y, u: mb.argsort(x=x, axis=1, ascending=False), None),
        "crop": (
            lambda x, y, u: mb.crop(x=x, crop_height=[1, 2], crop_width=[0, 1]),
            lambda x, y, u: x[..., 1:4, 0:5],
        ),
        "pixel_shuffle": (
            lambda x, y, u: mb.pixel_shuffle(
                x=mb.slice_by_size(x=mb.concat(values=[x, y], axis=1), begin=[0, 0, 0, 0], size=[2, 4, 6, 6]),
                upscale_factor=2,
            ),
            lambda x, y, u: F.pixel_shuffle(torch.from_numpy(np.concatenate([x, y], 1)[:, :4]), 2).numpy(),
        ),
        "pixel_unshuffle": (
            lambda x, y, u: mb.pixel_unshuffle(x=x, downscale_factor=np.uint32(2)),
            lambda x, y, u: F.pixel_unshuffle(torch.from_numpy(x), 2).numpy(),
        ),
        "resize_linear": (
            lambda x, y, u: mb.resize(
                x=x, shape=np.array([9, 5], i32), resized_dims=np.uint32(2), sampling_mode="UNALIGN_CORNERS"
            ),
            lambda x, y, u: F.interpolate(torch.from_numpy(x), size=(9, 5), mode="bilinear").numpy(),
        ),
        "resize_nearest": (
            lambda x, y, u: mb.resize(
                x=x, shape=np.array([9, 5], i32), resized_dims=np.uint32(2), interpolation_mode="NEAREST_NEIGHBOR"
            ),
            lambda x, y, u: nearest(x, (9, 5)),
        ),
        "resize_nearest_neighbor": (
            lambda x, y, u: mb.resize_nearest_neighbor(x=x, target_size_height=9, target_size_width=4),
            lambda x, y, u: nearest(x, (9, 4)),
        ),
        **{
            f"resize_bilinear_{mode}": (
                lambda x, y, u, mode=mode: mb.resize_bilinear(
                    x=x, target_size_height=9, target_size_width=4, sampling_mode=mode
                ),
                lambda x, y, u, mode=mode: _interp_ref(x, (9, 4), mode),
            )
            for mode in ("STRICT_ALIGN_CORNERS", "ALIGN_CORNERS", "DEFAULT", "OFFSET_CORNERS", "UNALIGN_CORNERS")
        },
        "upsample_bilinear_asymmetric": (
            lambda x, y, u: mb.upsample_bilinear(
                x=x, scale_factor_height=2.0, scale_factor_width=1.5, align_corners=False, half_pixel_centers=False
            ),
            lambda x, y, u: _interp_ref(x, (12, 9), "DEFAULT"),
        ),
    }


def _value_inference(mb: Any, ct: Any, build: Callable, arrays: tuple) -> list:
    from coremltools.converters.mil.mil import Function

    with Function({}, opset_version=ct.target.iOS17):
        out = build(*[mb.const(val=a) for a in arrays])
    return [o.val for o in (out if isinstance(out, (tuple, list)) else (out,))]


def test_mil_builder_ops(conv: Converter, ct: Any) -> None:
    from coremltools.converters.mil import Builder as mb

    cases = _mil_cases(mb)
    arrays = (X.numpy()[:, :, :6, :6].copy(), randn(2, 3, 6, 6, seed=8).numpy(), U)
    counts: list[int] = []

    def build(x: Any, y: Any, u: Any) -> tuple:
        outs: list = []
        for fn, _ in cases.values():
            out = fn(x, y, u)
            out = out if isinstance(out, (tuple, list)) else (out,)
            counts.append(len(out))
            outs.extend(out)
        return tuple(outs)

    specs = [mb.TensorSpec(shape=(2, 3, 6, 6)) for _ in range(3)]
    prog = mb.program(input_specs=specs, opset_version=ct.target.iOS17)(build)
    with quiet():
        mlmodel = ct.convert(
            prog,
            convert_to="mlprogram",
            compute_precision=ct.precision.FLOAT32,
            minimum_deployment_target=ct.target.iOS17,
            pass_pipeline=ct.PassPipeline.EMPTY,
        )
    program = conv._save(mlmodel)
    assert program.unsupported_ops() == ()
    got = program.run(dict(zip(program.input_names, arrays)))
    values = iter(got[name] for name in program.output_names)
    for (name, (fn, ref)), n in zip(cases.items(), counts):
        outs = [next(values) for _ in range(n)]
        if ref is None:
            wants = _value_inference(mb, ct, fn, arrays)
            assert all(w is not None for w in wants), f"{name}: no value_inference oracle"
        else:
            want = ref(*arrays)
            wants = list(want) if isinstance(want, tuple) else [want]
        for o, w in zip(outs, wants):
            np.testing.assert_allclose(o, np.asarray(w).astype(o.dtype), rtol=1e-5, atol=1e-5, err_msg=name)


@pytest.mark.parametrize(
    ("mode", "n_out", "want"),
    [
        ("UNALIGN_CORNERS", 5, [0.0, 0.1, 0.5, 0.9, 1.0]),
        ("STRICT_ALIGN_CORNERS", 5, [0.0, 0.25, 0.5, 0.75, 1.0]),
        ("ALIGN_CORNERS", 5, [0.0, 0.25, 0.5, 0.75, 1.0]),
        ("DEFAULT", 5, [0.0, 0.4, 0.8, 1.0, 1.0]),
        ("OFFSET_CORNERS", 5, [0.1, 0.3, 0.5, 0.7, 0.9]),
        ("UNALIGN_CORNERS", 6, [0.0, 0.0, 0.33, 0.67, 1.0, 1.0]),
        ("STRICT_ALIGN_CORNERS", 6, [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]),
        ("DEFAULT", 6, [0.0, 0.33, 0.67, 1.0, 1.0, 1.0]),
        ("OFFSET_CORNERS", 6, [0.08, 0.25, 0.42, 0.58, 0.75, 0.92]),
    ],
)
def test_resize_grid_matches_mil_docs(mode: str, n_out: int, want: list[float]) -> None:
    """Grid points from the resize_bilinear docstring (input size 2)."""
    np.testing.assert_allclose(resize._grid(mode, 2, n_out), want, atol=0.005)


def test_slice_update_ios18(conv: Converter, ct: Any) -> None:
    from coremltools.converters.mil import Builder as mb

    def build(x: Any, y: Any) -> Any:
        upd = mb.slice_by_size(x=y, begin=[0, 0, 0, 0], size=[2, 2, 3, 6])
        return mb.slice_update(x=x, update=upd, begin=[0, 1, 0, 0], end=[2, 3, 6, 6], stride=[1, 1, 2, 1])

    specs = [mb.TensorSpec(shape=(2, 3, 6, 6)), mb.TensorSpec(shape=(2, 3, 6, 6))]
    prog = mb.program(input_specs=specs, opset_version=ct.target.iOS18)(build)
    with quiet():
        mlmodel = ct.convert(
            prog,
            convert_to="mlprogram",
            compute_precision=ct.precision.FLOAT32,
            minimum_deployment_target=ct.target.iOS18,
            pass_pipeline=ct.PassPipeline.EMPTY,
        )
    program = conv._save(mlmodel)
    x, y = X.numpy()[:, :, :6, :6].copy(), randn(2, 3, 6, 6, seed=2).numpy()
    want = x.copy()
    want[:, 1:3, 0:6:2] = y[:, :2, :3]
    (got,) = program.run(dict(zip(program.input_names, (x, y)))).values()
    np.testing.assert_allclose(got, want)


def test_slice_update_at_a_runtime_position(conv: Converter, ct: Any) -> None:
    """The KV-cache write of a stateful LLM: begin/end computed from an int32 input, as
    ``cache[:, :, start:start + n] = k`` converts; numpy slice assignment is the reference."""
    from coremltools.converters.mil import Builder as mb

    def build(cache: Any, update: Any, start: Any) -> Any:
        zero = np.zeros(1, np.int32)
        begin = mb.concat(values=[zero, zero, start, zero], axis=0)
        end = mb.concat(values=[np.ones(1, np.int32), np.full(1, 2, np.int32), mb.add(x=start, y=np.int32(3)),
                                np.full(1, 4, np.int32)], axis=0)
        return mb.slice_update(x=cache, update=update, begin=begin, end=end)

    specs = [mb.TensorSpec(shape=(1, 2, 8, 4)), mb.TensorSpec(shape=(1, 2, 3, 4)),
             mb.TensorSpec(shape=(1,), dtype=ct.converters.mil.mil.types.int32)]
    program = conv.mil(build, specs, target="iOS18")
    cache, update = randn(1, 2, 8, 4).numpy(), randn(1, 2, 3, 4, seed=1).numpy()
    for start in (0, 2, 5):
        want = cache.copy()
        want[:, :, start:start + 3] = update
        (got,) = program.run(dict(zip(program.input_names, (cache, update, np.array([start], np.int32))))).values()
        np.testing.assert_array_equal(got, want)


def test_scaled_dot_product_attention_ios18(conv: Converter) -> None:
    q, k, v = randn(1, 2, 5, 8), randn(1, 2, 7, 8, seed=1), randn(1, 2, 7, 8, seed=2)
    bool_mask = torch.rand(5, 7, generator=torch.Generator().manual_seed(3)) > 0.3
    bool_mask[:, 0] = True

    def fn(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor) -> tuple:
        return (
            F.scaled_dot_product_attention(q, k, v),
            F.scaled_dot_product_attention(q, k, v, attn_mask=bool_mask),
            F.scaled_dot_product_attention(q, k, v, attn_mask=mask),
        )

    program = assert_matches(conv, Fn(fn), (q, k, v, randn(5, 7, seed=4)), FP32, target="iOS18")
    assert "scaled_dot_product_attention" in {s.op_type for s in program._steps}


# --------------------------------------------------------------------------
# whole models
# --------------------------------------------------------------------------


class DigitsCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(1, 8, 3, padding=1)
        self.c2 = nn.Conv2d(8, 16, 3, padding=1)
        self.fc = nn.Linear(16 * 2 * 2, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.c1(x)), 2, 2)
        x = F.max_pool2d(F.relu(self.c2(x)), 2, 2)
        return self.fc(x.flatten(1))


class Block(nn.Module):
    def __init__(self, d: int, heads: int, causal: bool) -> None:
        super().__init__()
        self.heads, self.causal = heads, causal
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.mlp = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        h = self.heads
        q, k, v = self.qkv(self.ln1(x)).split(d, -1)
        q, k, v = (z.reshape(b, t, h, d // h).transpose(1, 2) for z in (q, k, v))
        att = q @ k.transpose(-1, -2) / math.sqrt(d // h)
        if self.causal:
            att = att.masked_fill(torch.ones(t, t, dtype=torch.bool).triu(1), float("-inf"))
        y = (att.softmax(-1) @ v).transpose(1, 2).reshape(b, t, d)
        x = x + self.proj(y)
        return x + self.mlp(self.ln2(x))


class TinyTransformer(nn.Module):
    def __init__(self, d: int = 64, layers: int = 2, vocab: int = 50, seq: int = 16) -> None:
        super().__init__()
        self.emb = nn.Embedding(vocab, d)
        self.pos = nn.Parameter(torch.randn(seq, d) * 0.02)
        self.blocks = nn.ModuleList([Block(d, 4, causal=i == 0) for i in range(layers)])
        self.mha = nn.MultiheadAttention(d, 4, batch_first=True)
        self.ln = nn.LayerNorm(d)
        self.head = nn.Linear(d, vocab)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.emb(tokens) + self.pos
        for block in self.blocks:
            x = block(x)
        x = x + self.mha(x, x, x, need_weights=False)[0]
        return self.head(self.ln(x))


class ConvZoo(nn.Module):
    """Depthwise/strided/dilated convs, pools, batchnorm, upsampling."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, stride=2, padding=1), nn.BatchNorm2d(16), nn.ReLU6())
        self.dw = nn.Sequential(nn.Conv2d(16, 16, 3, padding=2, dilation=2, groups=16), nn.BatchNorm2d(16), nn.SiLU())
        self.pw = nn.Conv2d(16, 24, 1)
        self.down = nn.Conv2d(24, 24, 3, stride=2, padding=1, groups=4)
        self.up = nn.ConvTranspose2d(24, 16, 2, stride=2)
        self.head = nn.Conv2d(32, 4, 1)
        with torch.no_grad():
            for m in self.modules():
                if isinstance(m, nn.BatchNorm2d):
                    m.running_mean.uniform_(-0.5, 0.5)
                    m.running_var.uniform_(0.5, 1.5)

    def forward(self, x: torch.Tensor) -> tuple:
        a = self.dw(self.stem(x))
        b = self.down(self.pw(a))
        c = F.avg_pool2d(b, 3, 1, 1) + F.max_pool2d(b, 3, 1, 1)
        u = torch.cat([self.up(c), F.interpolate(a, scale_factor=1, mode="nearest")], 1)
        y = F.interpolate(self.head(u), scale_factor=2, mode="bilinear", align_corners=False)
        return y, F.adaptive_avg_pool2d(c, 1).flatten(1)


def _seeded(cls: type, *args: Any) -> nn.Module:
    torch.manual_seed(0)
    return cls(*args).eval()


@pytest.fixture(scope="module")
def digits() -> tuple[nn.Module, torch.Tensor]:
    return _seeded(DigitsCNN), randn(4, 1, 8, 8)


@pytest.fixture(scope="module")
def transformer() -> tuple[nn.Module, torch.Tensor]:
    tokens = torch.randint(0, 50, (1, 16), generator=torch.Generator().manual_seed(0)).to(torch.int32)
    return _seeded(TinyTransformer), tokens


@pytest.mark.parametrize("precision", [FP32, FP16])
def test_digits_cnn(conv: Converter, digits: tuple, precision: str) -> None:
    assert_matches(conv, *digits[:1], (digits[1],), precision)


@pytest.mark.slow
@pytest.mark.parametrize("precision", [FP32, FP16])
def test_transformer(conv: Converter, transformer: tuple, precision: str) -> None:
    model, tokens = transformer
    program = assert_matches(
        conv,
        model,
        (tokens,),
        precision,
        rtol=1e-3 if precision == FP32 else 5e-2,
        atol=1e-4 if precision == FP32 else 5e-2,
    )
    feeds = {program.input_names[0]: tokens.numpy()}
    program.run(feeds)
    start = time.perf_counter()
    for _ in range(5):
        program.run(feeds)
    per_input = (time.perf_counter() - start) / 5
    print(f"transformer ({precision}) per-input latency: {per_input * 1e3:.1f} ms")


@pytest.mark.slow
@pytest.mark.parametrize("precision", [FP32, FP16])
def test_conv_zoo(conv: Converter, precision: str) -> None:
    assert_matches(conv, _seeded(ConvZoo), (randn(2, 3, 16, 16),), precision, atol=1e-4 if precision == FP32 else None)


# --------------------------------------------------------------------------
# compressed weights (coremltools.optimize.coreml)
# --------------------------------------------------------------------------


def _compressions(ct: Any) -> dict[str, tuple[str, Callable[[Any], Any], str]]:
    cto = ct.optimize.coreml
    return {
        "int8_per_channel": (
            "iOS17",
            lambda m: cto.linear_quantize_weights(
                m, cto.OptimizationConfig(cto.OpLinearQuantizerConfig(mode="linear_symmetric", weight_threshold=1024))
            ),
            "constexpr_affine_dequantize",
        ),
        "int4_per_block32": (
            "iOS18",
            lambda m: cto.linear_quantize_weights(
                m,
                cto.OptimizationConfig(
                    cto.OpLinearQuantizerConfig(
                        mode="linear_symmetric",
                        dtype="int4",
                        granularity="per_block",
                        block_size=32,
                        weight_threshold=1024,
                    )
                ),
            ),
            "constexpr_blockwise_shift_scale",
        ),
        "palettize_4bit_kmeans": (
            "iOS17",
            lambda m: cto.palettize_weights(
                m, cto.OptimizationConfig(cto.OpPalettizerConfig(mode="kmeans", nbits=4, weight_threshold=1024))
            ),
            "constexpr_lut_to_dense",
        ),
    }


@pytest.mark.slow
@pytest.mark.parametrize("scheme", ["int8_per_channel", "int4_per_block32", "palettize_4bit_kmeans"])
def test_compressed_models(conv: Converter, ct: Any, transformer: tuple, digits: tuple, scheme: str) -> None:
    target, compress, op_type = _compressions(ct)[scheme]
    seen: set[str] = set()
    for key, (model, x) in {"transformer": transformer, "digits": digits}.items():
        with quiet():
            mlmodel = compress(conv.cached_mlmodel(key, model, (x,), FP16, target))
        program = conv._save(mlmodel)
        seen |= program.op_types
        (got,) = run(program, x)
        (want,) = reference(model, x)
        assert cosine(got, want) >= 0.99, (scheme, key)
    assert op_type in seen


# --------------------------------------------------------------------------
# precision emulation
# --------------------------------------------------------------------------


class Overflow(nn.Module):
    """Activations exceed the fp16 range (65504) in the middle of the graph."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.full((16, 16), 1.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return ((x * 1e3) @ self.w) / 1e4


def test_fp16_overflow_is_emulated(conv: Converter) -> None:
    model, x = Overflow(), torch.full((1, 16), 8.0)
    (want,) = reference(model, x)  # 8e3 * 16 = 128000 > 65504 before scaling down
    program32 = conv.torch(model, (x,), FP32)
    np.testing.assert_allclose(run(program32, x)[0], want, rtol=1e-5)
    program16 = conv.torch(model, (x,), FP16)
    assert program16.compute_precision == "float16"
    (got16,) = run(program16, x)
    assert np.isinf(got16).all()


def test_fp16_rounding_is_emulated(conv: Converter) -> None:
    """1 + 1e-4 is not representable in fp16: fp16 programs lose it, fp32 ones keep it."""
    model = Fn(lambda x: (x + 1.0) - 1.0)
    x = torch.full((4,), 1e-4)
    assert run(conv.torch(model, (x,), FP32), x)[0] == pytest.approx(1e-4, rel=1e-3)
    assert np.all(run(conv.torch(model, (x,), FP16), x)[0] == 0)


# --------------------------------------------------------------------------
# unsupported ops and input validation
# --------------------------------------------------------------------------


def test_unsupported_op_is_named_before_running(conv: Converter, monkeypatch: pytest.MonkeyPatch) -> None:
    model = Fn(lambda x: torch.relu(x) + torch.sigmoid(x))
    x = randn(2, 4)
    monkeypatch.delitem(registry.KERNELS, "relu")
    monkeypatch.delitem(registry.KERNELS, "sigmoid")
    program = conv.torch(model, (x,))
    assert program.unsupported_ops() == ("relu", "sigmoid")
    with pytest.raises(mr.UnsupportedOps) as info:
        program.run({program.input_names[0]: x.numpy()})
    assert info.value.ops == ("relu", "sigmoid")


def test_real_unsupported_ops_from_mil(conv: Converter) -> None:
    from coremltools.converters.mil import Builder as mb

    def build(x: Any) -> Any:
        y = mb.local_response_norm(x=mb.relu(x=x), size=3)
        return mb.sliding_windows(x=y, axis=1, size=2)

    program = conv.mil(build, [mb.TensorSpec(shape=(1, 3, 6, 6))])
    assert program.unsupported_ops() == ("local_response_norm", "sliding_windows")
    with pytest.raises(mr.UnsupportedOps, match="local_response_norm, sliding_windows"):
        program.run({"x": np.zeros((1, 3, 6, 6), np.float32)})


def test_input_validation(conv: Converter, digits: tuple) -> None:
    model, x = digits
    program = conv.torch(model, (x,))
    name = program.input_names[0]
    with pytest.raises(ValueError, match="missing"):
        program.run({})
    with pytest.raises(ValueError, match="shape"):
        program.run({name: np.zeros((1, 1, 8, 8), np.float32)})
    out = program.run({name: x.numpy().astype(np.float64)})
    assert out[program.output_names[0]].dtype == np.float32


# --------------------------------------------------------------------------
# against the real Core ML runtime (macOS only)
# --------------------------------------------------------------------------


@pytest.mark.skipif(sys.platform != "darwin", reason="MLModel.predict needs macOS")
@pytest.mark.parametrize("precision", [FP32, FP16])
def test_matches_coreml_predict(conv: Converter, ct: Any, transformer: tuple, precision: str) -> None:
    model, tokens = transformer
    mlmodel = conv.mlmodel(model, (tokens,), precision)
    program = conv._save(mlmodel)
    feeds = {program.input_names[0]: tokens.numpy()}
    got = program.run(feeds)
    want = mlmodel.predict(feeds)
    for name in program.output_names:
        assert cosine(got[name], np.asarray(want[name])) >= 0.999


def test_weight_pool_keeps_dense_weights_within_its_budget() -> None:
    """Blockwise weights dequantize once while the pool's byte budget lasts (a small LLM's decode
    reads every weight at every token), and per read after it (a large one's memory stays bounded)."""
    from edge_export.exporters.coreml.mil.quantization import Blockwise, WeightPool

    codes = np.arange(-8, 8, dtype=np.int8).reshape(4, 4)
    scale = np.array([[0.5], [0.25], [1.0], [2.0]], np.float32)
    pool = WeightPool(dense_budget=codes.size * 4)  # room for one fp32 copy
    first = Blockwise(codes, scale, None, np.dtype(np.float32), pool)
    second = Blockwise(codes + 1, scale, None, np.dtype(np.float32), pool)
    np.testing.assert_array_equal(first.materialise(), codes.astype(np.float32) * scale)
    assert first.materialise() is first.materialise()
    np.testing.assert_array_equal(second.materialise(), (codes + 1).astype(np.float32) * scale)
    assert second.materialise() is not second.materialise()  # the budget is spent
    # the same weight read by another function of the package shares both its codes and its dense copy
    again = Blockwise(codes.copy(), scale.copy(), None, np.dtype(np.float32), pool)
    assert again.data is first.data and again.materialise() is first.materialise()
