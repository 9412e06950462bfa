"""What a run tells the user: the --json object, the terminal table, the recipe matrix."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.table import Table

from edge_export.build.exporter import availability, target_names
from edge_export.build.pipeline import RunReport
from edge_export.cli.progress import output_console
from edge_export.quant.recipe import builtin_aliases, builtin_recipes

METRIC_KEYS = ("max_abs", "mean_abs", "cosine", "snr_db", "top1_agreement")


def report_json(report: RunReport) -> dict[str, Any]:
    packages = []
    fp32_bytes = {r.target: (r.manifest or {}).get("artifact", {}).get("bytes")
                  for r in report.results if r.recipe == "fp32"}
    for result in report.results:
        manifest = result.manifest or {}
        artifact = manifest.get("artifact", {})
        path = report.published.get((result.target, result.recipe))
        parity = result.parity or {"status": "not-run", "runtime": "", "reason": result.error,
                                   "outputs": {}}
        entry = {
            "target": result.target,
            "recipe": result.recipe,
            "status": result.status,
            "verified": result.verified,
            "path": str(path) if path else None,
            "artifact": str(path / artifact["path"]) if path and artifact else None,
            "sha256": artifact.get("sha256"),
            "bytes": artifact.get("bytes"),
            # Against the fp32 artifact of the same target, when this run built one.
            "bytes_ratio_to_fp32": (round(artifact["bytes"] / fp32_bytes[result.target], 4)
                                    if artifact and fp32_bytes.get(result.target) else None),
            "parity": {
                "status": parity["status"], "runtime": parity["runtime"],
                "reason": parity["reason"],
                "outputs": {name: {k: m[k] for k in METRIC_KEYS if k in m}
                            for name, m in parity.get("outputs", {}).items()},
            },
            "accuracy": manifest.get("accuracy"),
            "timings": result.timings,
            "latency": result.latency,
        }
        if result.error:
            entry["error"] = {"code": result.error_code, "message": result.error}
        packages.append(entry)
    ok = report.exit_code == 0
    error = run_error(report)
    skipped = [s.to_json() for s in report.skipped]  # targets --target all left out
    return {"ok": ok, "packages": packages, **({"skipped": skipped} if skipped else {}),
            **({"error": error} if error else {})}


def run_error(report: RunReport) -> dict[str, Any] | None:
    """The run's failure as one ``{code, message}``: each broken (target, recipe) with its
    cause, then what did succeed — the line the CLI prints as ``error:``."""
    if report.exit_code == 0:
        return None
    broken = [f"{r.target}/{r.recipe}: {r.error or (r.parity or {}).get('reason') or r.status}"
              for r in report.results if r.status in ("error", "failed")]
    broken += [f"{r.target}/{r.recipe}: not verified, kept under .failed/ (--allow-unverified publishes "
               f"it): {r.parity.get('reason')}" for r in report.refused_unverified]
    succeeded = [f"{r.target}/{r.recipe}" for r in report.results if report.publishes(r)]
    message = "; ".join(broken) + (f" (succeeded: {', '.join(succeeded)})" if succeeded else "")
    return {"code": report.exit_code, "message": " ".join(message.split())}


def print_summary(report: RunReport, out: Path) -> None:
    """The table on stdout (the run's result, what ``| tee log.txt`` keeps), the reasons,
    skips and partial successes on stderr. Off a terminal every row is one whole line; on a
    narrow terminal a long runtime or path folds onto more lines rather than being cut."""
    console, notes = output_console(), output_console(stderr=True)
    table = Table(title="edge-export", show_lines=False)
    for col in ("target", "recipe", "result", "runtime", "bytes", "worst cosine", "SNR dB",
                "package"):
        table.add_column(col, overflow="fold")
    for result in report.results:
        parity = result.parity or {}
        worst = (result.manifest or {}).get("parity", {}).get("worst", {})
        artifact = (result.manifest or {}).get("artifact", {})
        path = report.published.get((result.target, result.recipe))
        style = {"passed": "green", "not-run": "yellow"}.get(result.status, "red")
        table.add_row(result.target, result.recipe, f"[{style}]{result.status}[/]",
                      parity.get("runtime", ""), f"{artifact.get('bytes', ''):,}"
                      if artifact else "", f"{worst['cosine']:.6f}" if worst else "",
                      f"{worst['snr_db']:.1f}" if worst else "", str(path or ""))
    console.print(table)
    for result in report.results:
        reason = result.error or (result.parity or {}).get("reason")
        if reason:
            notes.print(f"{result.target}/{result.recipe}: {reason}", highlight=False)
    succeeded = [f"{r.target}/{r.recipe}" for r in report.results if r.status != "error"]
    if any(r.status == "error" for r in report.results) and succeeded:
        notes.print(f"succeeded: {', '.join(succeeded)}", highlight=False)
    for skipped in report.skipped:
        notes.print(f"skipped {skipped.target} (--target all): {skipped.describe()}",
                    highlight=False, markup=False, soft_wrap=True)
    if report.published:
        unverified = [f"{r.target}/{r.recipe}" for r in report.results if report.publishes(r) and not r.verified]
        console.print(f"packages are in {out}/" + (f" ({', '.join(unverified)} published unverified: "
                      "nothing ran it; --allow-unverified)" if unverified else ""), highlight=False)


def recipe_matrix() -> dict[str, dict[str, Any]]:
    """{recipe: {target: {"supported", "summary" | "reason", "installed", "install"}}} over
    every shipped recipe; ``installed`` says whether the target's toolchain is here and
    ``install`` is the pip command that brings it (null when installed). A portable name's
    cells (``int8``, ``int4``) carry ``"alias": {"calibrated", "data_free"}``: the recipe it
    resolves to with ``--calibration-data`` and without."""
    matrix: dict[str, dict[str, Any]] = {}
    for target in target_names():
        status = availability(target)
        cells: dict[str, dict[str, Any]] = {
            name: {"supported": True, "summary": alias.summary, "alias": {
                "calibrated": alias.calibrated, "data_free": alias.data_free}}
            for name, alias in builtin_aliases(target).items()}
        for name, recipe in builtin_recipes(target).items():
            cells[name] = ({"supported": True, "summary": recipe.summary, "scheme": recipe.scheme,
                            "calibration": recipe.calibration_required,
                            "minimum_deployment": recipe.minimum_deployment}
                           if recipe.supported else {"supported": False, "reason": recipe.unsupported})
        for name, cell in cells.items():
            cell.update(installed=status.installed, install=status.install_command
                        if not status.installed else None)
            matrix.setdefault(name, {})[target] = cell
    return matrix


def _cell_text(cell: dict[str, Any] | None) -> str:
    if cell is None:
        return "[dim]—[/]"
    if "alias" in cell:
        chosen = cell["alias"]
        if chosen["calibrated"] == chosen["data_free"]:
            return f"[cyan]→ {chosen['data_free']}[/]"
        return f"[cyan]→ {chosen['data_free']}; with --calibration-data → {chosen['calibrated']}[/]"
    if cell["supported"]:
        return f"[green]{cell['summary']}[/]"
    return f"[dim]— {cell['reason']}[/]"


def print_recipe_matrix(matrix: dict[str, dict[str, Any]]) -> None:
    console = output_console()
    targets = target_names()
    table = Table(title="recipes × targets", show_lines=True)
    table.add_column("recipe", style="bold")
    statuses = {t: availability(t) for t in targets}
    for target in targets:
        table.add_column(target if statuses[target].installed else f"{target} [red](not installed)[/]",
                         overflow="fold")
    order = ["int8", "int4", "fp32", "fp16", "int8-dynamic", "int8-static", "int8-weight", "int4-weight",
             "8da4w", "palettize4"]
    for name in sorted(matrix, key=lambda n: (order.index(n) if n in order else 99, n)):
        table.add_row(name, *(_cell_text(matrix[name].get(target)) for target in targets))
    console.print(table)
    console.print("int8, int4: portable names for each target's best 8-bit and 4-bit recipe "
                  "(recipes/<target>/aliases/); a package is named after the recipe it resolved to",
                  highlight=False, markup=False, soft_wrap=True)
    for status in statuses.values():
        if not status.installed:
            console.print(f"{status.target}: {status.describe()}", highlight=False, markup=False,
                          soft_wrap=True)
