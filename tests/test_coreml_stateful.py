"""Stateful Core ML programs (iOS18 states) on the MIL reference executor.

A small attention layer keeps fp16 K/V caches as registered buffers and writes each
call's keys and values into them by slice assignment at a position given as input,
the shape of an LLM's static KV cache. coremltools turns the buffers into ``ct.StateType``
states (``read_state`` / ``slice_update`` / ``coreml_update_state``); the executor must
carry them from one call to the next exactly as PyTorch carries its buffers.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))
from coreml_transformers_zoo import convert_to_mil, cosine  # noqa: E402

pytestmark = pytest.mark.slow
DIM, MAX_LEN, STEP = 16, 8, 2


class CachedAttention(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.q, self.k, self.v = nn.Linear(DIM, DIM), nn.Linear(DIM, DIM), nn.Linear(DIM, DIM)
        self.register_buffer("k_cache", torch.zeros(1, MAX_LEN, DIM, dtype=torch.float16))
        self.register_buffer("v_cache", torch.zeros(1, MAX_LEN, DIM, dtype=torch.float16))

    def forward(self, x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        start = pos.item()
        torch._check_is_size(start)
        torch._check(start + STEP <= MAX_LEN)
        self.k_cache[:, start : start + STEP] = self.k(x).half()
        self.v_cache[:, start : start + STEP] = self.v(x).half()
        keys, values = self.k_cache.float(), self.v_cache.float()
        scores = self.q(x) @ keys.transpose(1, 2) / DIM**0.5
        visible = torch.arange(MAX_LEN)[None, :] <= (start + torch.arange(STEP))[:, None]
        return scores.masked_fill(~visible, -1e4).softmax(-1) @ values


@pytest.fixture(scope="module")
def converted(tmp_path_factory: pytest.TempPathFactory) -> tuple:
    import coremltools as ct

    torch.manual_seed(0)
    model = CachedAttention().eval()
    example = (torch.randn(1, STEP, DIM), torch.tensor([0], dtype=torch.int32))
    states = [ct.StateType(wrapped_type=ct.TensorType(shape=(1, MAX_LEN, DIM), dtype=np.float16), name=name)
              for name in ("k_cache", "v_cache")]
    program = convert_to_mil(model, example, tmp_path_factory.mktemp("state") / "kv.mlpackage",
                             states=states, target="iOS18")
    return model, program


def test_program_declares_the_caches_as_fp16_states(converted: tuple) -> None:
    _, program = converted
    assert {"read_state", "slice_update", "coreml_update_state"} <= program.op_types
    assert {name: (s.dtype, s.shape) for name, s in program.state_specs.items()} == {
        "k_cache": (np.float16, (1, MAX_LEN, DIM)), "v_cache": (np.float16, (1, MAX_LEN, DIM))}
    assert program.input_names == ["input_0", "input_1"]


def test_state_carries_over_between_calls_like_torch_buffers(converted: tuple) -> None:
    model, program = converted
    model.k_cache.zero_()
    model.v_cache.zero_()
    state = program.new_state()
    assert not state["k_cache"].any()
    gen = torch.Generator().manual_seed(3)
    for position in (0, STEP):  # prefill-like first call, then a call that must see its keys
        x = torch.randn(1, STEP, DIM, generator=gen)
        pos = torch.tensor([position], dtype=torch.int32)
        with torch.no_grad():
            want = model(x, pos).numpy()
        got = program.run({"input_0": x.numpy(), "input_1": pos.numpy()}, state=state)
        (out,) = got.values()
        assert cosine(out, want) > 0.9999
        np.testing.assert_allclose(out, want, atol=2e-3)
        for name in ("k_cache", "v_cache"):
            assert state[name].dtype == np.float16
            np.testing.assert_array_equal(state[name], getattr(model, name).numpy())
    assert state["k_cache"][:, : 2 * STEP].any() and not state["k_cache"][:, 2 * STEP :].any()


def test_fresh_state_forgets_and_states_are_required(converted: tuple) -> None:
    model, program = converted
    x = np.ones((1, STEP, DIM), np.float32)
    pos = np.array([STEP], np.int32)
    used = program.new_state()
    program.run({"input_0": x, "input_1": np.array([0], np.int32)}, state=used)
    after_history = program.run({"input_0": x, "input_1": pos}, state=used)
    fresh = program.run({"input_0": x, "input_1": pos}, state=program.new_state())
    assert not np.allclose(next(iter(after_history.values())), next(iter(fresh.values())))
    with pytest.raises(ValueError, match="new_state"):
        program.run({"input_0": x, "input_1": pos})
    with pytest.raises(ValueError, match="shape"):
        used["k_cache"] = np.zeros((1, 2, DIM))
