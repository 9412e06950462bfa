"""The ``edge-export`` command line.

Only click and our own light modules are imported at start: torch and the
toolchains load inside the commands that need them, so ``--help`` and argument
errors stay instant. Exceptions become exit codes in exactly one place, ``main``.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click

from edge_export import __version__
from edge_export.errors import (
    EXIT_INTERRUPTED,
    EXIT_TOOLCHAIN,
    EXIT_USAGE,
    EdgeExportError,
    exit_process,
    output_error,
)
from edge_export.load.tasks import TASKS

EXIT_CODES_HELP = """\b
Exit codes:
  0  every package passed its gates (or, with --allow-unverified, could not be run here)
  1  a parity or accuracy gate failed (the package is kept under OUT/.failed/)
  2  usage error or bad input (model spec, inputs, recipe, data, package)
  3  the toolchain failed to export or lower (--debug shows the traceback)
  4  a package's artifact could not be run on this host, so nothing verified it (kept
     under OUT/.failed/; --allow-unverified publishes it with "verified": false)
  130 interrupted (Ctrl-C)
  Several at once: 3, then 2, then 1, then 4."""


# Subcommands live in their own modules and load on first use (name -> "module:attr").
LAZY_COMMANDS = {
    "bundle": "edge_export.cli.bundle:bundle_cmd",
    "coreml-ops": "edge_export.cli.bundle:coreml_ops_cmd",
    "doctor": "edge_export.cli.doctor:doctor_cmd",
    "generate": "edge_export.llm.commands:generate_cmd",
    "inspect": "edge_export.cli.inspect:inspect_cmd",
    "latency": "edge_export.cli.latency:latency_cmd",
    "llm": "edge_export.llm.commands:llm_cmd",
    "release": "edge_export.cli.release:release_cmd",
    "verify": "edge_export.cli.release:verify_cmd",
}


class DefaultExportGroup(click.Group):
    """``edge-export --model ... --target ...`` runs the ``export`` command; the other
    verbs (recipes, verify, bundle, release, ...) are subcommands."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*self.commands, *LAZY_COMMANDS})

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in LAZY_COMMANDS and name not in self.commands:
            import importlib

            module, attr = LAZY_COMMANDS[name].split(":")
            self.add_command(getattr(importlib.import_module(module), attr), name)
        return self.commands.get(name)

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.list_commands(ctx) and args[0] not in (
                "--help", "-h", "--version"):
            args = ["export", *args]
        return super().parse_args(ctx, args)

    def main(self, args: list[str] | None = None, prog_name: str | None = None,
             **extra: Any) -> None:
        """Map every failure to its documented exit code and a one-line message."""
        argv = list(sys.argv[1:] if args is None else args)
        as_json, debug = "--json" in argv, "--debug" in argv
        extra.pop("standalone_mode", None)
        try:
            code = super().main(args=argv, prog_name=prog_name or "edge-export",
                                standalone_mode=False, **extra)
        except click.exceptions.Exit as exc:
            code = exc.exit_code
        except click.ClickException as exc:
            _fail(EXIT_USAGE, exc.format_message(), as_json)
        except (click.Abort, KeyboardInterrupt):
            _fail(EXIT_INTERRUPTED, "interrupted", as_json)
        except EdgeExportError as exc:
            if debug:
                raise
            _fail(exc.exit_code, exc.one_line(), as_json)
        except Exception as exc:  # noqa: BLE001 - a bug of ours: one line, traceback on --debug
            if debug:
                raise
            if (error := output_error(exc)) is not None:  # disk full, read-only --out
                _fail(error.exit_code, error.one_line(), as_json)
            from edge_export.errors import summarize_exception

            _fail(EXIT_TOOLCHAIN, f"unexpected error: {summarize_exception(exc)} "
                  "(run with --debug for the traceback)", as_json)
        sys.exit(code if isinstance(code, int) else 0)

    def format_usage(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        formatter.write_usage("edge-export", "--model SPEC --target android|ios|tflite|all "
                              "[OPTIONS]\n       edge-export COMMAND [ARGS]...")

    def format_options(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        self.commands["export"].format_options(ctx, formatter)
        self.format_commands(ctx, formatter)


@click.group(cls=DefaultExportGroup, context_settings={"help_option_names": ["-h", "--help"],
                                                       "max_content_width": 100},
             epilog=EXIT_CODES_HELP)
@click.version_option(__version__, "--version", prog_name="edge-export")
def cli() -> None:
    """Export a PyTorch model to verified on-device model packages: android (ExecuTorch
    .pte, XNNPACK), ios (Core ML .mlpackage) and tflite (LiteRT .tflite).

    Each package is run on its own runtime and compared with PyTorch (parity); a
    failed gate publishes nothing. Model specs that name Python code
    (file.py:attr, package.module:attr) run that code, like ``python -m``.
    """


@cli.command("export", epilog=EXIT_CODES_HELP)
@click.option("--model", "model", required=True, metavar="SPEC",
              help="file.py:attr, package.module:attr, or a torch.export .pt2 file "
                   "(a pickled .pt module only with --trust-pickle).")
@click.option("--target", "targets", multiple=True, required=True, metavar="TARGET",
              help="A registered target (edge-export doctor lists them) or all; repeat for several.")
@click.option("--recipe", "recipes", multiple=True, default=("fp32",), show_default=True,
              metavar="NAME|FILE.toml", help="Quantization recipe (see `edge-export recipes`); "
              "repeat to build several variants.")
@click.option("--out", type=click.Path(path_type=Path), default=Path("dist"), show_default=True,
              help="Output directory.")
@click.option("--name", help="Package name (default: from the model source).")
@click.option("--version", "pkg_version", default="0.1.0", show_default=True,
              help="Package version.")
@click.option("--input", "inputs", multiple=True, metavar="NAME=1x3x224x224[:dtype]",
              help="Example input, when the model source provides none (repeatable).")
@click.option("--dynamic", "dynamic", multiple=True, metavar="NAME:DIM=MIN..MAX",
              help="A dimension of input NAME that takes any size in MIN..MAX, e.g. "
                   "input_ids:1=1..512 (repeatable; parity runs at MIN, the middle and MAX too).")
@click.option("--trust-pickle", is_flag=True, help="Allow a pickled .pt module (runs its code).")
@click.option("--task", type=click.Choice(list(TASKS)), metavar="TASK",
              help="What the model is, as optimum names it (" + ", ".join(TASKS) + "): sets the outputs' "
                   "kinds (top-1 gated for classifiers), the manifest's task and an image input's "
                   "preprocessing; refused if the outputs do not fit.")
@click.option("--validation-data", type=click.Path(path_type=Path), metavar="FILE.npz",
              help="Real inputs for parity (default: seeded random inputs).")
@click.option("--parity-samples", type=click.IntRange(1, 10_000), default=8, show_default=True,
              help="Parity samples besides the example inputs.")
@click.option("--calibration-data", type=click.Path(path_type=Path), metavar="FILE|DIR",
              help="Calibration samples: .npz, .pt, or a folder of images.")
@click.option("--calibration-samples", type=click.IntRange(1, 100_000),
              help="Use the first N calibration samples (default: the recipe's).")
@click.option("--keep-float", type=click.Choice(["auto", "none"]), default=None,
              help="Layers kept float, overriding the recipes' keep_float: auto keeps the fewest "
                   "most-sensitive layers that meet each recipe's goal (its parity gate when it "
                   "has none; int8-static ships with auto), none quantizes every layer (recipes "
                   "whose scheme honours keep_float: int8-static, android int8-dynamic/8da4w, "
                   "tflite weight/dynamic recipes, ios int8/int4-weight).")
@click.option("--eval-data", type=click.Path(path_type=Path), metavar="FILE.npz",
              help="Inputs plus 'labels': report accuracy of float vs each artifact.")
@click.option("--max-accuracy-drop", type=click.FloatRange(0), metavar="POINTS",
              help="Accuracy gate (default: the recipe's, 1.0 for 8-bit, 3.0 for 4-bit).")
@click.option("--jobs", type=click.IntRange(1, 64), default=1, show_default=True,
              help="Targets built in parallel worker processes (N > 1). One process is the default: "
                   "each worker imports torch and its toolchain again, which doubled peak memory and, "
                   "on 2 cores, saved at most 8% of the time (bench/RESULTS.md).")
@click.option("--threads", type=click.IntRange(1, 256), default=1, show_default=True,
              help="Threads every runtime (ExecuTorch/XNNPACK, LiteRT, the MIL reference's "
                   "BLAS, torch) may use while latency is measured; recorded with it.")
@click.option("--cache-dir", type=click.Path(path_type=Path, file_okay=False), metavar="DIR",
              help="Reuse artifacts and parity results of identical earlier builds from DIR "
                   "[default: the user cache dir, e.g. ~/.cache/edge-export].")
@click.option("--no-cache", is_flag=True, help="Neither read nor write the cache.")
@click.option("--report", "report_path", type=click.Path(path_type=Path, dir_okay=False),
              metavar="FILE.html", help="Also write a self-contained HTML report of the packages.")
@click.option("--json", "as_json", is_flag=True,
              help="Print one JSON object on stdout; logs go to stderr.")
@click.option("--allow-unverified", is_flag=True,
              help="Publish a package whose artifact this host cannot run (parity not-run, e.g. an ios "
                   "op the Linux MIL reference executor lacks) with \"verified\": false, and exit 0; "
                   "without it such a package is kept under OUT/.failed/ and the run exits 4.")
@click.option("--force", is_flag=True,
              help="Replace a published package built from a different model (a released "
                   "name/version is otherwise immutable).")
@click.option("--debug", is_flag=True, help="Show tracebacks.")
def export_cmd(model: str, targets: tuple[str, ...], recipes: tuple[str, ...], out: Path,
               name: str | None, pkg_version: str, inputs: tuple[str, ...], dynamic: tuple[str, ...],
               trust_pickle: bool, validation_data: Path | None, parity_samples: int, calibration_data: Path | None,
               calibration_samples: int | None, keep_float: str | None, eval_data: Path | None,
               max_accuracy_drop: float | None, jobs: int, threads: int, cache_dir: Path | None, no_cache: bool,
               report_path: Path | None, as_json: bool, allow_unverified: bool, force: bool,
               debug: bool, task: str | None) -> None:
    """Export MODEL to each --target with each --recipe, verify, and package."""
    from edge_export.load.tensors import parse_dynamic_spec, parse_input_spec

    specs = tuple(parse_input_spec(s) for s in inputs)
    declared = tuple(parse_dynamic_spec(s) for s in dynamic)
    _check_package_id(name, pkg_version)
    with _stdout_for_json(as_json) as emit:
        from edge_export.build.cache import default_dir as default_cache_dir
        from edge_export.build.pipeline import ExportOptions, run_export
        from edge_export.build.plan import plan_targets_and_recipes

        plan_targets_and_recipes(targets, recipes, calibration_data is not None)  # usage errors, no heavy imports
        opts = ExportOptions(
            model=model, targets=targets, recipes=recipes, out=out, name=name,
            version=pkg_version, inputs=specs, dynamic=declared, trust_pickle=trust_pickle,
            validation_data=validation_data, parity_samples=parity_samples,
            calibration_data=calibration_data, calibration_samples=calibration_samples,
            eval_data=eval_data, max_accuracy_drop=max_accuracy_drop, jobs=jobs, debug=debug,
            threads=threads, keep_float=keep_float, allow_unverified=allow_unverified,
            force=force, task=task, cache_dir=None if no_cache else cache_dir or default_cache_dir())
        report = run_export(opts)
        if report_path is not None:
            from edge_export.verify.report import write_report

            write_report(list(report.published.values()), report_path)
        from edge_export.cli.summary import print_summary, report_json, run_error

        _warn_busy(report)
        if as_json:
            emit(report_json(report))
        else:
            print_summary(report, out)
        error = run_error(report)
        if error:
            click.echo(f"error: {error['message']}", err=True)
    raise SystemExit(report.exit_code)


def _warn_busy(report: Any) -> None:
    """One loud line when a latency figure of this run was measured on a busy machine."""
    from edge_export.verify.latency import busy_warning

    busy = [r.latency for r in report.results if r.latency and r.latency.get("busy")]
    if busy and (message := busy_warning(max(busy, key=lambda m: m["load_avg_1m"]))):
        click.echo(message, err=True)


def _check_package_id(name: str | None, version: str) -> None:
    """Names and versions become folder and file names: refuse what could not be one."""
    import re

    from edge_export.errors import UsageError

    if name is not None and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name):
        raise UsageError(f"--name {name!r} is not a valid package name",
                         hint="use letters, digits, '.', '_' and '-'")
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._+-]*", version):
        raise UsageError(f"--version {version!r} is not a valid version", hint="e.g. 1.2.0")


@cli.command("recipes")
@click.option("--json", "as_json", is_flag=True, help="Print the matrix as JSON.")
def recipes_cmd(as_json: bool) -> None:
    """Show which recipe each target supports, and how (or why not)."""
    from edge_export.cli.summary import print_recipe_matrix, recipe_matrix

    matrix = recipe_matrix()
    if as_json:
        click.echo(json.dumps(matrix, indent=2, sort_keys=True))
    else:
        print_recipe_matrix(matrix)


@contextlib.contextmanager
def _stdout_for_json(as_json: bool) -> Iterator[Any]:
    """With --json, everything but the final object goes to stderr — including what
    toolchains print from C or Python — so stdout parses as exactly one JSON object."""
    if not as_json:
        yield lambda obj: None
        return
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    real_stdout = sys.stdout
    sys.stdout = sys.stderr
    try:
        yield lambda obj: os.write(saved, (json.dumps(obj, indent=2, sort_keys=True) + "\n")
                                   .encode())
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)
        sys.stdout = real_stdout


def main() -> None:
    """The console entry point: the command's exit code, then ``exit_process`` (no teardown)."""
    try:
        cli.main()
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        if isinstance(exc.code, str):
            print(exc.code, file=sys.stderr)
    exit_process(code)


def _fail(code: int, message: str, as_json: bool) -> None:
    message = " ".join(message.split())
    click.echo(f"error: {message}", err=True)
    if as_json:
        click.echo(json.dumps({"ok": False, "error": {"code": code, "message": message},
                               "packages": []}))
    raise SystemExit(code)
