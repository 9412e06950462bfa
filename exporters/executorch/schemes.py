"""How each recipe scheme is done for ExecuTorch/XNNPACK (PT2E and torchao)."""

from __future__ import annotations

from typing import Any

from edge_export.exporter import BuildContext, Prepared, SchemeTable

SCHEMES = SchemeTable()


@SCHEMES.register("none")
def float32(program: Any, recipe: Any, ctx: BuildContext) -> Prepared:
    return Prepared(program)
