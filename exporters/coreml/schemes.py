"""How each recipe scheme is done for Core ML (coremltools.optimize, PT2E)."""

from __future__ import annotations

import logging
import warnings
from typing import Any

from edge_export.exporter import BuildContext, Prepared, SchemeTable

SCHEMES = SchemeTable()


def coremltools() -> Any:
    """Import coremltools without its warnings about untested torch/sklearn versions
    and missing macOS-only native proxies (real errors still raise)."""
    logging.getLogger("coremltools").setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import coremltools as ct
    return ct


@SCHEMES.register("none")
def float_compute(program: Any, recipe: Any, ctx: BuildContext) -> Prepared:
    """fp32 / fp16: no weight change; the compute precision is a conversion option."""
    return Prepared(program)
