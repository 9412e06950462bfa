"""``edge-export inspect MODEL``: the pre-flight report (edge_export.load.preflight)."""

from __future__ import annotations

from typing import Any

import click


@click.command("inspect")
@click.argument("model")
@click.option("--target", "targets", multiple=True, default=("all",), show_default=True,
              help="Targets to check (repeatable).")
@click.option("--input", "inputs", multiple=True, metavar="NAME=SHAPE[:DTYPE]",
              help="Example input, as for export.")
@click.option("--trust-pickle", is_flag=True, help="Allow unpickling a .pt module (runs its code).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout.")
@click.option("--debug", is_flag=True, help="Show tracebacks.")
def inspect_cmd(model: str, targets: tuple[str, ...], inputs: tuple[str, ...], trust_pickle: bool,
                as_json: bool, debug: bool) -> None:
    """Report MODEL's parameters, dtypes, sparsity, compression, input/output contract and,
    per target, the ops that will not convert or not be delegated — before any export."""
    from edge_export.build.plan import resolve_targets
    from edge_export.cli.main import _stdout_for_json
    from edge_export.load.tensors import parse_input_spec

    specs = [parse_input_spec(s) for s in inputs]
    chosen = resolve_targets(targets)
    with _stdout_for_json(as_json) as emit:
        from edge_export.load.preflight import inspect_model

        report = inspect_model(model, chosen, specs, trust_pickle)
        if as_json:
            emit({"ok": True, **report})
            return
    _print(report)


def _print(report: dict[str, Any]) -> None:
    from rich.table import Table

    from edge_export.cli.progress import output_console

    console = output_console()
    c = report["compression"]
    console.print(f"[bold]{report['name']}[/] ({report['model']}): {report['parameters']:,} parameters, "
                  f"dtypes {report['dtypes']}, sparsity {c['sparsity']:.1%}")
    found = [f"{c['pruned_parameters']} pruning masks folded" if c["pruned_parameters"] else "",
             f"{c['quantization']} quantization" if c["quantization"] else "",
             f"{c['source_dtype']} weights (upcast)" if c["source_dtype"] != "float32" else "",
             "channels-last weights" if c["layout"] != "contiguous" else ""]
    console.print("compression: " + (", ".join(f for f in found if f) or "none found"))
    io = Table("", "name", "shape", "dtype", "kind")
    for entry in report["inputs"]:
        io.add_row("input", entry["name"], "x".join(map(str, entry["shape"])), entry["dtype"], "")
    for entry in report["outputs"]:
        io.add_row("output", entry["name"], "x".join(map(str, entry["shape"])), entry["dtype"],
                   entry.get("kind", ""))
    console.print(io)
    task = report["task"]
    console.print(f"task: {task['name']} ({task['source']}, {task['confidence']}: {task['why']})",
                  markup=False)
    if report["export"] != "ok":
        console.print(f"[red]torch.export fails[/]: {report['export']}")
        return
    carried = any("ships_as" in found for found in report["targets"].values())
    targets = Table("target", "prediction", "ops that will not convert", "ops not delegated",
                    *(["ships as (its own quantization)"] if carried else []))
    for column in targets.columns:
        column.overflow = "fold"  # op names whole, wrapped on a narrow terminal
    for target, found in report["targets"].items():
        targets.add_row(target, found["status"], ", ".join(found["not_converted"]) or found.get("error", ""),
                        ", ".join(found["not_delegated"]), *([found.get("ships_as", "")] if carried else []))
    console.print(targets)
