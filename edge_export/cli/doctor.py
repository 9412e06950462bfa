"""``edge-export doctor``: what can be built on this host, in one look.

Per registered target (built-in or a plugin installed later): whether its toolchain is
installed, with the version of each distribution it needs, the command that installs it, and
whether its parity runtime loads here. Everything is asked of the registry and each exporter
(``Toolchain``, ``Exporter.check_runtime``), so the command names no backend.
"""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path
from typing import Any

import click

from edge_export.errors import EXIT_OK, EXIT_TOOLCHAIN, EXIT_USAGE

DOCTOR_EXIT_HELP = """\b
Exit codes:
  0  every installed target's runtime loads here (at least one target is installed)
  2  no target is installed
  3  an installed target's runtime does not load on this host"""


def target_health(target: str) -> dict[str, Any]:
    """One target's toolchain and runtime, as the ``--json`` cell; ``usable`` is what ``--target``
    needs: the toolchain installed and the runtime loading (or no check declared)."""
    from edge_export.build.capture import toolchain_output
    from edge_export.build.exporter import availability, exporter_class, get_exporter, package_version
    from edge_export.errors import summarize_exception

    status = availability(target)
    try:
        toolchain = exporter_class(target).toolchain
    except ImportError:  # a plugin that imports a missing module: availability names it
        toolchain = None
    versions = {d: (None if (v := package_version(d)) == "not-installed" else v)
                for d in (toolchain.distributions if toolchain else status.missing)}
    runtime: dict[str, Any] = {"name": None, "loads": None, "error": None}
    cell: dict[str, Any] = {"target": target, "installed": status.installed, "versions": versions,
                            "missing": list(status.missing), "install": status.install_command,
                            "runtime": runtime}
    if status.installed:
        try:
            with toolchain_output(Path(os.devnull)):  # runtimes print banners as they load
                runtime["name"] = get_exporter(target).check_runtime()
        except Exception as exc:  # noqa: BLE001 - the failure to load is the finding
            runtime.update(loads=False, error=summarize_exception(exc))
        else:
            runtime["loads"] = True if runtime["name"] is not None else None
    cell["usable"] = status.installed and cell["runtime"]["loads"] is not False
    return cell


def diagnose() -> dict[str, Any]:
    """The whole report: the host, every registered target, and the exit code it means."""
    from edge_export import __version__
    from edge_export.build.exporter import package_version, target_names

    targets = [target_health(t) for t in target_names()]
    installed = [t for t in targets if t["installed"]]
    broken = [t["target"] for t in installed if not t["usable"]]
    code = EXIT_TOOLCHAIN if broken else EXIT_USAGE if not installed else EXIT_OK
    report: dict[str, Any] = {
        "ok": code == EXIT_OK,
        "host": {"edge-export": __version__, "python": platform.python_version(),
                 "platform": f"{sys.platform}-{platform.machine()}", "torch": package_version("torch")},
        "targets": targets}
    if broken:
        report["error"] = {"code": code, "message": "the runtime of installed target(s) "
                           f"{', '.join(broken)} does not load on this host"}
    elif not installed:
        report["error"] = {"code": code, "message": "no target is installed "
                           '(pip install "edge-export[all]" installs every built-in one)'}
    return report


@click.command("doctor", epilog=DOCTOR_EXIT_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout.")
def doctor_cmd(as_json: bool) -> None:
    """List each target with its toolchain (installed or not, with versions), the command that
    installs it, and whether its parity runtime loads on this host."""
    from edge_export.cli.main import _stdout_for_json

    with _stdout_for_json(as_json) as emit:
        report = diagnose()
        emit(report)
    if not as_json:
        _print(report)
    if "error" in report:
        click.echo(f"error: {report['error']['message']}", err=True)
    raise SystemExit(report["error"]["code"] if "error" in report else EXIT_OK)


def _print(report: dict[str, Any]) -> None:
    host = report["host"]
    click.echo(f"edge-export {host['edge-export']}, Python {host['python']}, torch {host['torch']}, "
               f"{host['platform']}")
    for cell in report["targets"]:
        versions = ", ".join(f"{d} {v or 'missing'}" for d, v in cell["versions"].items()) or "core install"
        runtime = cell["runtime"]
        if not cell["installed"]:
            hint = f" ({cell['install']})" if cell["install"] else ""
            mark, said = "❌", f"not installed: it needs {', '.join(cell['missing'])}{hint}"
        elif runtime["loads"] is False:
            mark, said = "❌", f"runtime does not load: {runtime['error']}"
        elif runtime["loads"] is None:
            mark, said = "✅", "runtime not checked (the exporter declares no check)"
        else:
            mark, said = "✅", f"runtime {runtime['name']} loads"
        click.echo(f"{mark} {cell['target']:8} {versions}; {said}")
