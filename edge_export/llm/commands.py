"""The ``llm`` and ``generate`` subcommands (registered lazily in ``edge_export.cli.main``).

They speak export's dialect: ``--target`` is required and follows export's rules (a named
target must be installed, ``all`` is every installed one and names the others as skipped),
``--json`` prints exactly one object on stdout (``{"ok", "packages", "skipped"?, "error"?}``)
with everything else on stderr, and ``--report`` writes the same HTML report.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import click

from edge_export.cli.main import EXIT_CODES_HELP, _check_package_id, _stdout_for_json


@click.command("llm", epilog=EXIT_CODES_HELP)
@click.option("--model", required=True, metavar="DIR|module:attr",
              help="A local transformers checkpoint directory (never downloaded) or module:attr "
                   "returning a causal LM (runs that code).")
@click.option("--target", "targets", multiple=True, required=True, metavar="TARGET",
              help="A registered target with an LLM backend, or all (every installed one); repeat for several.")
@click.option("--recipe", "recipes", multiple=True, default=("fp32",), show_default=True,
              metavar="fp32|fp16|8bit|4bit|4bit-emb|FILE.toml", help="LLM recipe (repeatable).")
@click.option("--max-context", type=click.IntRange(2, 1 << 20), default=512, show_default=True,
              help="Static KV-cache positions (prompt + generated tokens).")
@click.option("--out", type=click.Path(path_type=Path), default=Path("dist"), show_default=True)
@click.option("--name", help="Package name (default: the checkpoint directory's name).")
@click.option("--version", "pkg_version", default="0.1.0", show_default=True)
@click.option("--report", "report_path", type=click.Path(path_type=Path, dir_okay=False),
              metavar="FILE.html", help="Also write a self-contained HTML report of the packages.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout; logs go to stderr.")
@click.option("--allow-unverified", is_flag=True,
              help="Publish a package this host cannot run (\"verified\": false) and exit 0 (else: exit 4).")
@click.option("--debug", is_flag=True, help="Show tracebacks.")
def llm_cmd(model: str, targets: tuple[str, ...], recipes: tuple[str, ...], max_context: int, out: Path,
            name: str | None, pkg_version: str, report_path: Path | None, as_json: bool, allow_unverified: bool,
            debug: bool) -> None:
    """Export a decoder LLM with a static KV cache, verify it by generation, and package it
    with its tokenizer and generation config."""
    from edge_export.llm.recipe import load_recipe

    _check_package_id(name, pkg_version)
    for recipe in recipes:
        load_recipe(recipe)  # usage errors before heavy imports
    chosen, skipped = llm_targets_for(targets)
    with _stdout_for_json(as_json) as emit:
        from edge_export.llm.build import LLMOptions, run_llm

        code, results = run_llm(LLMOptions(model=model, targets=tuple(chosen), recipes=recipes,
                                           max_context=max_context, out=out, name=name, version=pkg_version,
                                           allow_unverified=allow_unverified),
                                log=lambda line: click.echo(line, err=True))
        if report_path is not None:
            from edge_export.verify.report import write_report

            write_report([Path(r["path"]) for r in results if r["status"] == "passed"], report_path,
                         title="edge-export llm report")
        error = _run_error(code, results)
        if as_json:
            extra = {**({"skipped": [s.to_json() for s in skipped]} if skipped else {}),
                     **({"error": error} if error else {})}
            emit({"ok": code == 0, "packages": results, **extra})
        else:
            _print_results(results, skipped)
        if error:
            click.echo(f"error: {error['message']}", err=True)
    raise SystemExit(code)


def llm_targets_for(names: tuple[str, ...]) -> tuple[list[str], list[Any]]:
    """Export's ``--target`` rules (``select_targets``), then the LLM backends: a named target
    without one is refused, one ``all`` brought in is skipped with the reason."""
    from dataclasses import replace

    from edge_export.build.exporter import availability, select_targets
    from edge_export.errors import UsageError
    from edge_export.llm.backend import get_backend, llm_targets

    chosen, skipped = select_targets(names)
    backends = set(llm_targets())
    for target in [t for t in chosen if t not in backends]:
        if target in names:
            get_backend(target)  # raises: no LLM backend for this target
        chosen.remove(target)
        skipped.append(replace(availability(target), refusal="it has no LLM backend"))
    if not chosen:
        raise UsageError("--target all: no installed target has an LLM backend",
                         hint=f"LLM targets: {', '.join(sorted(backends))}")
    return chosen, skipped


def _run_error(code: int, results: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Export's ``error`` for a run whose gates failed: each failed package with its gates,
    then what did pass."""
    if code == 0:
        return None
    broken = [f"{r['target']}/{r['recipe']}: " + (f"not verified: {r['reason']}" if r["status"] == "not-run"
                                                  else f"gate failed: {'; '.join(r['failures'])}")
              for r in results if r["status"] != "passed"]
    passed = [f"{r['target']}/{r['recipe']}" for r in results if r["status"] == "passed"]
    message = "; ".join(broken) + (f" (succeeded: {', '.join(passed)})" if passed else "")
    return {"code": code, "message": " ".join(message.split())}


def _print_results(results: list[dict[str, Any]], skipped: list[Any]) -> None:
    """The packages as export shows them: one table row each, whole off a terminal."""
    from rich.table import Table

    from edge_export.cli.progress import STATUS_STYLE, output_console

    table = Table(title="edge-export llm")
    for col in ("target", "recipe", "result", "runtime", "bytes", "perplexity float → artifact",
                "top-1 / cosine", "export s", "peak RSS MB", "package"):
        table.add_column(col, overflow="fold")
    for r in results:
        m, t = r["metrics"], r["timings"]
        ppl = m.get("perplexity", {})
        agreement = (f"top-1 {m['top1_agreement']:.3f}" if "top1_agreement" in m
                     else f"cosine {m.get('greedy_worst_logits_cosine', 0):.6f}")
        table.add_row(r["target"], r["recipe"], f"[{STATUS_STYLE.get(r['status'], 'red')}]{r['status']}[/]",
                      r["runtime"], f"{r['bytes']:,}", f"{ppl.get('float', 0):.2f} → {ppl.get('artifact', 0):.2f}",
                      agreement, f"{t['export_s']:.1f}", f"{t['peak_rss_mb']:.0f}", r["path"])
    output_console().print(table)
    notes = output_console(stderr=True)
    for status in skipped:
        notes.print(f"skipped {status.target} (--target all): {status.describe()}",
                    highlight=False, markup=False, soft_wrap=True)


@click.command("generate", epilog=EXIT_CODES_HELP)
@click.argument("package", type=click.Path(path_type=Path, file_okay=False))
@click.option("--prompt", required=True)
@click.option("--max-new-tokens", type=click.IntRange(1, 1 << 20), default=64, show_default=True)
@click.option("--json", "as_json", is_flag=True,
              help="Print one JSON object on stdout (tokens, text, tok/s) instead of streaming the text.")
@click.option("--debug", is_flag=True, help="Show tracebacks.")
def generate_cmd(package: Path, prompt: str, max_new_tokens: int, as_json: bool, debug: bool) -> None:
    """Run an LLM package on its host runtime with its tokenizer, printing tokens as they
    come, then prefill and decode tok/s."""
    from edge_export.llm.generate import generate

    if not as_json:
        generate(package, prompt, max_new_tokens)
        return
    with _stdout_for_json(as_json) as emit:
        result = generate(package, prompt, max_new_tokens, out=io.StringIO())
        emit({"ok": True, "prompt": prompt, "text": result["text"], "tokens": result["ids"],
              **{k: result[k] for k in ("prompt_tokens", "new_tokens", "prefill_tok_s", "decode_tok_s",
                                        "runtime")}})
