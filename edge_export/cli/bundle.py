"""``edge-export bundle`` and ``edge-export coreml-ops``: small commands around packages."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("bundle")
@click.option("--app", type=click.Choice(["android", "ios"]), required=True,
              help="Which sample app receives the packages.")
@click.option("--apps-root", type=click.Path(path_type=Path, file_okay=False), default=Path("."),
              show_default=True, help="Folder holding android_demo/ and ios_demo/.")
@click.argument("packages", nargs=-1, required=True, type=click.Path(path_type=Path))
def bundle_cmd(app: str, apps_root: Path, packages: tuple[Path, ...]) -> None:
    """Copy verified PACKAGES into a sample app's assets (replacing atomically)."""
    from edge_export.release.bundle import bundle

    for dest in bundle(app, list(packages), apps_root):
        click.echo(str(dest))


@click.command("coreml-ops")
def coreml_ops_cmd() -> None:
    """List the Core ML (MIL) op types the Linux reference executor evaluates."""
    from edge_export.exporters.coreml.mil_reference import supported_op_table

    for op, note in supported_op_table():
        click.echo(f"{op:40} {note}")
