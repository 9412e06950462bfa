"""``edge-export verify`` and ``edge-export release``."""

from __future__ import annotations

import json
import os
from pathlib import Path

import click

from edge_export.package.archive import MAX_EXTRACT_BYTES


@click.command("verify")
@click.option("--max-bytes", type=click.IntRange(1), default=MAX_EXTRACT_BYTES, show_default=True,
              help="Refuse a zip that extracts to more than this many bytes.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout.")
@click.option("--allow-unverified", is_flag=True,
              help="Exit 0 when the golden outputs cannot be re-run on this host (integrity still checked).")
@click.argument("package", type=click.Path(path_type=Path))
def verify_cmd(package: Path, max_bytes: int, as_json: bool, allow_unverified: bool) -> None:
    """Check PACKAGE (a package directory or its .zip): manifest schema, every file's
    sha256 and size, and its golden inputs re-run on the host runtime at the recipe's
    thresholds. Exit 0 ok, 1 mismatch, 2 malformed or unsafe input, 4 golden outputs not
    re-run here (runtime not installed or unable to run the artifact) unless --allow-unverified."""
    from edge_export.errors import Unverified
    from edge_export.release.bundle import is_llm_manifest
    from edge_export.verify.integrity import verify

    checked = verify(package, max_bytes)
    m, parity = checked.manifest, checked.parity
    if parity.status == "not-run" and not allow_unverified:  # the hashes hold, but nothing ran it
        raise Unverified(f"{package}: files match, but the golden outputs were not re-run: {parity.reason}",
                         hint="--allow-unverified accepts integrity alone")
    if parity.status == "not-run":
        click.echo(f"warning: golden outputs not re-run: {parity.reason}", err=True)
    if as_json:
        click.echo(json.dumps({"ok": True, "package": str(package), "name": m["name"],
                               "version": m["version"], "target": m["target"],
                               "recipe": m["recipe"]["name"], "files": len(m["files"]) + 1,
                               "parity": parity.to_json()}, indent=2, sort_keys=True))
        return
    what = f"{m['name']} {m['version']} {m['target']}/{m['recipe']['name']}"
    files = len(m["files"]) + 1
    if parity.status == "not-run":
        click.echo(f"ok: {what}: {files} files match; golden outputs not re-run ({parity.reason})")
        return
    if is_llm_manifest(m):
        click.echo(f"ok: {what}: {files} files match; {parity.reason} on {parity.runtime}")
        return
    worst = min(parity.outputs.values(), key=lambda o: o["cosine"])
    click.echo(f"ok: {what}: {files} files match; {len(m['golden']['samples'])} golden samples "
               f"re-run on {parity.runtime} (worst cosine {worst['cosine']:.6f}, "
               f"SNR {worst['snr_db']:.1f} dB)")


@click.command("release")
@click.argument("config", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--out", type=click.Path(path_type=Path, file_okay=False), default=Path("dist/releases"),
              show_default=True, help="Releases folder; this release goes to OUT/<version>/.")
@click.option("--version", "version", metavar="VERSION", help="Override the config's version.")
@click.option("--jobs", type=click.IntRange(1, 256), default=os.cpu_count() or 1,
              show_default="number of cores", help="Packages built in parallel.")
@click.option("--executor", type=click.Choice(["local", "ray"]), default="local", show_default=True,
              help="local worker processes, or Ray workers.")
@click.option("--ray-address", metavar="ADDR", help="Ray cluster to join (default: $RAY_ADDRESS, "
              "else a local Ray instance with --jobs CPUs).")
@click.option("--keep-going", is_flag=True, help="Build every entry and report all failures "
              "(the release is still not published if one fails).")
@click.option("--debug", is_flag=True, help="Show tracebacks.")
def release_cmd(config: Path, out: Path, version: str | None, jobs: int, executor: str,
                ray_address: str | None, keep_going: bool, debug: bool) -> None:
    """Build every model x target x recipe of CONFIG (TOML) into OUT/<version>/: zips,
    SHA256SUMS, index.json, RELEASE_NOTES.md and report.html — all or nothing. A package whose
    artifact could not be run here is refused by name (exit 4) unless the config sets
    allow_unverified = true (top level or per [[models]])."""
    from edge_export.release.run import release

    result = release(config, out, executor=executor, workers=jobs, keep_going=keep_going,
                     ray_address=ray_address, version=version, log=lambda m: click.echo(m, err=True))
    reused = sum(1 for o in result.outcomes if o.reused_from)
    unverified = [o.job.label for o in result.outcomes if not o.verified]
    click.echo(f"release {result.version}: {len(result.outcomes)} packages "
               f"({reused} reused) in {result.path}"
               + (f"; unverified, allowed by the config: {', '.join(unverified)}" if unverified else ""))
