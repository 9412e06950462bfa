"""The ``llm`` and ``generate`` subcommands (registered lazily in ``edge_export.cli.main``)."""

from __future__ import annotations

from pathlib import Path

import click

from edge_export.cli.main import EXIT_CODES_HELP, _check_package_id


@click.command("llm", epilog=EXIT_CODES_HELP)
@click.option("--model", required=True, metavar="DIR|module:attr",
              help="A local transformers checkpoint directory (never downloaded) or module:attr "
                   "returning a causal LM (runs that code).")
@click.option("--target", "targets", multiple=True, default=("android",), show_default=True,
              help="LLM target (repeatable; 'all' for every installed LLM backend).")
@click.option("--recipe", "recipes", multiple=True, default=("fp32",), show_default=True,
              metavar="fp32|fp16|8bit|4bit|4bit-emb|FILE.toml", help="LLM recipe (repeatable).")
@click.option("--max-context", type=click.IntRange(2, 1 << 20), default=512, show_default=True,
              help="Static KV-cache positions (prompt + generated tokens).")
@click.option("--out", type=click.Path(path_type=Path), default=Path("dist"), show_default=True)
@click.option("--name", help="Package name (default: the checkpoint directory's name).")
@click.option("--version", "pkg_version", default="0.1.0", show_default=True)
@click.option("--allow-unverified", is_flag=True,
              help="Publish a package this host cannot run (\"verified\": false) and exit 0 (else: exit 4).")
@click.option("--debug", is_flag=True, help="Show tracebacks.")
def llm_cmd(model: str, targets: tuple[str, ...], recipes: tuple[str, ...], max_context: int, out: Path,
            name: str | None, pkg_version: str, allow_unverified: bool, debug: bool) -> None:
    """Export a decoder LLM with a static KV cache, verify it by generation, and package it
    with its tokenizer and generation config."""
    from edge_export.llm.backend import llm_targets
    from edge_export.llm.recipe import load_recipe

    _check_package_id(name, pkg_version)
    for recipe in recipes:
        load_recipe(recipe)  # usage errors before heavy imports
    chosen = tuple(llm_targets()) if "all" in targets else tuple(dict.fromkeys(targets))
    from edge_export.llm.build import LLMOptions, print_results, run_llm

    code, results = run_llm(LLMOptions(model=model, targets=chosen, recipes=recipes, max_context=max_context,
                                       out=out, name=name, version=pkg_version,
                                       allow_unverified=allow_unverified),
                            log=lambda line: click.echo(line, err=True))
    print_results(results)
    raise SystemExit(code)


@click.command("generate", epilog=EXIT_CODES_HELP)
@click.argument("package", type=click.Path(path_type=Path, file_okay=False))
@click.option("--prompt", required=True)
@click.option("--max-new-tokens", type=click.IntRange(1, 1 << 20), default=64, show_default=True)
@click.option("--debug", is_flag=True, help="Show tracebacks.")
def generate_cmd(package: Path, prompt: str, max_new_tokens: int, debug: bool) -> None:
    """Run an LLM package on its host runtime with its tokenizer, printing tokens as they
    come, then prefill and decode tok/s."""
    from edge_export.llm.generate import generate

    generate(package, prompt, max_new_tokens)
