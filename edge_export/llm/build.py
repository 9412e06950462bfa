"""``edge-export llm``: load once, then per target x recipe quantize, export, verify by
generation, and publish — or keep the failed package under ``OUT/.failed/``.

Memory: at most one copy of the model's weights is alive at any time. The float model
computes the references, then is handed to the first build; a quantized build consumes
it (every backend quantizes in place), so the next build loads a fresh float copy only
after the previous one, its quantized model and its export intermediates are freed.
A quantized build holds the only reference to its model and runs the same-quantization
reference before the export, so the weights are freed as soon as the export is written:
the artifact's gates run beside its runtime alone (the ios gates on the MIL reference
executor used to hold the 4 GB of a 1.1 B model's torch weights beside the artifact's)."""

from __future__ import annotations

import gc
import json
import resource
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge_export.build.exporter import RuntimeUnavailable
from edge_export.errors import ToolchainError, UsageError, outcome_code, summarize_exception
from edge_export.llm import evaluation as ev
from edge_export.llm import package as pk
from edge_export.llm import quantize as lq
from edge_export.llm.backend import ExportSpec, LLMBackend, get_backend
from edge_export.llm.model import LoadedLM, check_context, load_lm, special_ids
from edge_export.llm.recipe import LLMRecipe, load_recipe
from edge_export.package.manifest import failed_dir, package_dir, publish, staging_root

PREFILL_LIMIT = 127  # torch.export's static cache export takes a token Dim up to 127, not 128


@dataclass
class LLMOptions:
    model: str
    targets: tuple[str, ...]
    recipes: tuple[str, ...]
    max_context: int
    out: Path
    name: str | None = None
    version: str = "0.1.0"
    allow_unverified: bool = False  # publish a package this host's runtime cannot run ("verified": false)


@dataclass
class References:
    """What PyTorch float computes once, shared by every recipe."""

    prompts: list[np.ndarray]
    greedy: list[tuple[list[int], np.ndarray]]
    windows: list[np.ndarray]
    float_logits: list[np.ndarray]
    large: bool  # a large model: the eager references extend a cache (evaluation.EagerSession)


def run_llm(opts: LLMOptions, log: Any = print) -> tuple[int, list[dict[str, Any]]]:
    backends = {t: get_backend(t) for t in opts.targets}
    recipes = [load_recipe(r) for r in opts.recipes]
    for backend in backends.values():
        for recipe in recipes:
            if (reason := backend.refusal(recipe.for_target(backend.target))) is not None:
                raise UsageError(f"{backend.target} cannot build recipe {recipe.name}: {reason}")
    lm = load_lm(opts.model)
    check_context(lm, opts.max_context)
    if lm.tokenizer_json is None:
        raise UsageError(f"{opts.model} has no tokenizer.json; an LLM package must carry its tokenizer",
                         hint="put tokenizer.json in the checkpoint directory (or set edge_export_tokenizer_json)")
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(lm.tokenizer_json))
    bos, eos = special_ids(lm)
    spec = ExportSpec(max_context=opts.max_context, max_seq_len=min(PREFILL_LIMIT, opts.max_context - 1),
                      bos_id=bos, eos_ids=eos, vocab_size=int(lm.config.vocab_size))
    source = {"model": lm.source, "architecture": type(lm.model).__name__,
              "parameters": sum(p.numel() for p in lm.model.parameters())}
    refs = _references(lm, tokenizer, spec, max(r.greedy_steps for r in recipes), source["parameters"])
    results = []
    float_model = lm.model
    lm.model = None  # from here on the builds own the weights: one copy at a time
    for generic in recipes:
        for backend in backends.values():
            recipe = generic.for_target(backend.target)  # the [targets.<target>] overrides applied
            # each backend quantizes in place with its own scheme: a quantized build consumes
            # the float model, and the next build loads a fresh one after this one is freed
            # a quantized build is handed the only reference (a one-item list it empties),
            # so it can free the weights before the artifact's gates load the artifact
            model = [float_model if float_model is not None else load_lm(opts.model).model]
            float_model = None if recipe.quantized else model[0]
            log(f"{backend.target}-{recipe.name}: quantizing, exporting and verifying ...")
            result = _build_one(lm, model, backend, recipe, spec, refs, tokenizer, opts, source)
            del model
            gc.collect()
            log(f"{backend.target}-{recipe.name}: {result['status']} -> {result['path']}"
                + "".join(f"\n  gate failed: {f}" for f in result["failures"])
                + (f"\n  not verified: {result['reason']}" if result["status"] == "not-run" else ""))
            results.append(result)
    statuses = [r["status"] for r in results]  # the model exporter's rule: errors have raised by now
    return outcome_code([], "failed" in statuses, "not-run" in statuses and not opts.allow_unverified), results


def _references(lm: LoadedLM, tokenizer: Any, spec: ExportSpec, steps: int, parameters: int) -> References:
    from edge_export.llm.text import pydoc_split

    large = ev.is_large(parameters)
    eager = ev.EagerSession(lm.model, spec.max_seq_len, spec.max_context, cached=large)
    prompts = [np.array(tokenizer.encode(p).ids, dtype=np.int64) for p in ev.GOLDEN_PROMPTS]
    greedy = [ev.greedy(eager, p, steps) for p in prompts]
    held = [i for doc in pydoc_split()[1] for i in tokenizer.encode(doc).ids]
    windows = ev.eval_windows(held, spec.max_seq_len, ev.LARGE_EVAL_TOKENS if large else ev.EVAL_TOKENS)
    return References(prompts, greedy, windows, ev.teacher_forced(eager, windows), large)


def _build_one(lm: LoadedLM, model: list[Any], backend: LLMBackend, recipe: LLMRecipe, spec: ExportSpec,
               refs: References, tokenizer: Any, opts: LLMOptions, source: dict[str, Any]) -> dict[str, Any]:
    root = staging_root(opts.out)
    try:
        return _build_in(root / f"{backend.target}-{recipe.name}", lm, model, backend, recipe, spec, refs,
                         tokenizer, opts, source)
    finally:  # whatever happened, no temporaries stay under --out
        shutil.rmtree(root, ignore_errors=True)


def _build_in(staged: Path, lm: LoadedLM, owned: list[Any], backend: LLMBackend, recipe: LLMRecipe, spec: ExportSpec,
              refs: References, tokenizer: Any, opts: LLMOptions, source: dict[str, Any]) -> dict[str, Any]:
    name = opts.name or lm.name
    staged.mkdir()
    timings: dict[str, float] = {}
    started = time.perf_counter()
    model = owned.pop()
    try:
        model = backend.quantize(model, recipe)
        unquantized = lq.unquantized(model)  # None for float recipes
        timings["export_s"] = time.perf_counter() - started
        t0 = time.perf_counter()
        if recipe.exact:
            reference_greedy = [(t[:recipe.greedy_steps], lg[:recipe.greedy_steps]) for t, lg in refs.greedy]
        else:  # the same-quantization reference, run before the export so the weights can go after it
            reference = ev.EagerSession(model, spec.max_seq_len, spec.max_context, cached=refs.large)
            reference_logits = ev.teacher_forced(reference, refs.windows)
            reference_greedy = [ev.greedy(reference, p, recipe.greedy_steps) for p in refs.prompts]
            del reference
        timings["verify_s"] = time.perf_counter() - t0
        started = time.perf_counter()
        backend.export(model, spec, recipe, staged / backend.artifact_name)
        del model  # the last reference to a quantized model: its weights are freed here
        gc.collect()  # and the export's intermediates, before the runtime loads the artifact
    except UsageError:
        raise
    except Exception as exc:  # noqa: BLE001 - the toolchain's failure, as one line
        raise ToolchainError(f"{backend.target} export of {recipe.name} failed: {summarize_exception(exc)}") from exc
    timings["export_s"] += time.perf_counter() - started
    report = ev.GateReport()
    t0 = time.perf_counter()
    try:
        session = backend.open_session(staged / backend.artifact_name)
    except RuntimeUnavailable as exc:  # nothing can run it here: no gate, the goldens are PyTorch's
        status, unavailable, artifact_greedy = "not-run", str(exc), reference_greedy
    else:
        artifact_greedy = [ev.greedy(session, p, recipe.greedy_steps) for p in refs.prompts]
        artifact_logits = ev.teacher_forced(session, refs.windows)
        if recipe.exact:
            ev.greedy_gate(report, recipe, reference_greedy, artifact_greedy)
            report.metrics["perplexity"] = {"float": ev.perplexity(refs.float_logits, refs.windows),
                                            "artifact": ev.perplexity(artifact_logits, refs.windows)}
        else:
            ev.quantized_gates(report, recipe, refs.windows, refs.float_logits, reference_logits, artifact_logits)
        status, unavailable = ("passed" if report.passed else "failed"), ""
    timings["verify_s"] += time.perf_counter() - t0
    timings["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    parity = {"status": status, "runtime": backend.runtime_name, "metrics": report.metrics,
              "failures": report.failures, **({"reason": unavailable} if unavailable else {})}
    (staged / "parity.json").write_text(json.dumps({**parity, "gates": recipe.as_dict()}, indent=2) + "\n")
    generation = {"path": pk.GENERATION, "bos_token_id": spec.bos_id, "eos_token_ids": spec.eos_ids,
                  "max_context": spec.max_context, "max_seq_len": spec.max_seq_len, "vocab_size": spec.vocab_size,
                  "has_chat_template": lm.chat_template is not None}
    pk.write_generation_config(staged, generation, lm.chat_template)
    goldens = [{"prompt": text, "prompt_ids": p.tolist(), "continuation_ids": art[0],
                "continuation_text": tokenizer.decode(art[0]), "pytorch_ids": ref[0]}
               for text, p, art, ref in zip(ev.GOLDEN_PROMPTS, refs.prompts, artifact_greedy, reference_greedy)]
    manifest = {
        "name": name, "version": opts.version, "target": backend.target, "verified": status != "not-run",
        "format": backend.format,
        "recipe": recipe.as_dict(), "artifact": {"path": backend.artifact_name},
        "tokenizer": pk.copy_tokenizer(staged, lm.tokenizer_json), "generation": generation,
        "golden": pk.write_golden(staged, goldens), "parity": parity,
        "runtime": {"runtime": backend.runtime_name, **backend.tool_versions()},
        "tools": backend.tool_versions(), "timings": timings,
        "source": source, **({"unquantized": unquantized} if unquantized is not None else {})}
    manifest = pk.finish_manifest(staged, manifest)
    published = status == "passed" or (status == "not-run" and opts.allow_unverified)
    where = (package_dir if published else failed_dir)(opts.out, name, opts.version, backend.target, recipe.name)
    publish(staged, where)
    return {"target": backend.target, "recipe": recipe.name, "status": status, "runtime": backend.runtime_name,
            "path": str(where), "verified": status != "not-run", "reason": unavailable,
            "bytes": manifest["artifact"]["bytes"], "metrics": report.metrics, "failures": report.failures,
            "timings": timings}
