"""The MIL reference executor's original import path, kept for ``edge-export coreml-ops``
and existing callers; the executor lives in :mod:`.mil` (one module per op family)."""

from __future__ import annotations

from .mil import Program, State, UnsupportedOps, load, supported_op_table, supported_ops

SUPPORTED_OPS: frozenset[str] = supported_ops()

__all__ = ["SUPPORTED_OPS", "Program", "State", "UnsupportedOps", "load", "supported_op_table"]
