"""``make bench-llm`` (part of ``make bench``): LLM rows per target and recipe.

Each (target, recipe) is exported by the real CLI in its own process (``edge-export llm``), so the
manifest's peak RSS is that export's alone; prefill and decode speeds come from
``edge_export.llm.generate`` on the package (the same code as ``edge-export generate``), best of
``--runs``, with the load average beside every figure. Writes bench/llm.json and bench/LLM.md.

The 1.1 B rows (``--large``: a TinyLlama-1.1B-shaped Llama with random weights, 4bit, the targets
of ``--large-targets``, default android) are a benchmark, not a test: tens of minutes on 2 cores, so
they only run when asked. All large targets are built by ONE ``edge-export llm`` call (the memory
goal is for that call), so each row's peak RSS is that process's peak up to the end of that row's
package, and its export s is that package's own quantize + export time.

Usage: python bench/llm.py [--targets android,ios,tflite] [--recipes fp32,4bit] [--runs 3]
                           [--large [--large-only] [--large-targets android,tflite,ios]]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from edge_export.package.manifest import failed_dir, package_dir

ROOT = Path(__file__).resolve().parent.parent
TINY_LM = ROOT / "examples" / "tiny_lm"
LARGE = ROOT / "bench" / "llm_large.py"
PROMPT = "The for statement is used to iterate over the elements of a sequence"
CONTEXT = 256
NEW_TOKENS = 64


def export(model: str, targets: list[str], recipe: str, out: Path, context: int
           ) -> tuple[dict[str, Path | None], str, float]:
    """One ``edge-export llm`` process for ``targets``: (target -> package or None, error, wall s)."""
    start = time.perf_counter()
    command = [sys.executable, "-m", "edge_export", "llm", "--model", model, "--recipe", recipe,
               "--max-context", str(context), "--name", "bench", "--out", str(out)]
    for target in targets:
        command += ["--target", target]
    proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - start
    packages: dict[str, Path | None] = {}
    for target in targets:  # a package whose gate failed is kept under OUT/.failed/: measured too
        found = [where(out, "bench", "0.1.0", target, recipe) for where in (package_dir, failed_dir)]
        packages[target] = next((p for p in found if p.exists()), None)
    error = "" if proc.returncode == 0 else " ".join(proc.stderr.strip().splitlines()[-1:])[:200]
    return packages, error, wall


def host_read_gb_s(runs: int = 3) -> float:
    """What this host can stream from memory right now: ``count_nonzero`` over 1 GiB split across one thread per
    core (numpy releases the GIL), best of ``runs``. Every decode step of an LLM reads all its weights once, so
    bytes × decode tok/s above this is not a speed the runtime can have had (``render`` flags it)."""
    import threading

    import numpy as np

    data = np.zeros(1 << 30, dtype=np.uint8)
    parts = np.array_split(data, os.cpu_count() or 1)
    best = 0.0
    for _ in range(runs):
        threads = [threading.Thread(target=np.count_nonzero, args=(part,)) for part in parts]
        start = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        best = max(best, data.nbytes / (time.perf_counter() - start) / 1e9)
    return round(best, 1)


def speeds(package: Path, runs: int) -> dict[str, float]:
    from edge_export.llm.generate import generate

    best: dict[str, float] = {}
    for _ in range(runs):
        stats = generate(package, PROMPT, NEW_TOKENS, out=io.StringIO(), err=io.StringIO())
        for key in ("prefill_tok_s", "decode_tok_s"):
            best[key] = max(best.get(key, 0.0), stats[key])
        best["prompt_tokens"] = stats["prompt_tokens"]
    best["load"] = os.getloadavg()[0]
    return best


def eager_speeds(model_dir: Path, runs: int) -> dict[str, float]:
    """PyTorch eager on the same prompt and token count (transformers' model with its KV cache,
    greedy, best of ``runs``): the reference the MIL executor's decode is held to (goal ≤ 3×)."""
    import torch
    from tokenizers import Tokenizer
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    ids = torch.tensor([Tokenizer.from_file(str(model_dir / "tokenizer.json")).encode(PROMPT).ids])
    best = {"prefill_tok_s": 0.0, "decode_tok_s": 0.0}
    with torch.inference_mode():
        for _ in range(runs):
            start = time.perf_counter()
            out = model(input_ids=ids, use_cache=True)
            prefilled = time.perf_counter()
            for _ in range(NEW_TOKENS - 1):
                out = model(input_ids=out.logits[:, -1:].argmax(-1), past_key_values=out.past_key_values,
                            use_cache=True)
            decoded = time.perf_counter()
            best["prefill_tok_s"] = max(best["prefill_tok_s"], ids.shape[1] / (prefilled - start))
            best["decode_tok_s"] = max(best["decode_tok_s"], (NEW_TOKENS - 1) / (decoded - prefilled))
    return {**{k: round(v, 1) for k, v in best.items()}, "load": round(os.getloadavg()[0], 2),
            "measured": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}


def rows(model: str, targets: list[str], recipe: str, out: Path, runs: int, context: int) -> list[dict[str, Any]]:
    packages, error, wall = export(model, targets, recipe, out, context)
    load = round(os.getloadavg()[0], 2)
    base = {"model": Path(model.split(":")[0]).stem, "recipe": recipe, "context": context, "wall_s": round(wall, 1),
            "export_load": load}
    return [measure({**base, "target": target}, package, runs, error) for target, package in packages.items()]


def measure(result: dict[str, Any], package: Path | None, runs: int, error: str = "") -> dict[str, Any]:
    """A row from a package's manifest plus its generate speeds."""
    if package is None:
        return {**result, "status": "error", "error": error or "no package"}
    manifest = json.loads((package / "manifest.json").read_text())
    timings = manifest.get("timings", {})
    metrics = manifest["parity"]["metrics"]
    result.update(status=manifest["parity"]["status"], bytes=manifest["artifact"]["bytes"],
                  export_s=round(timings.get("export_s", 0.0), 1), verify_s=round(timings.get("verify_s", 0.0), 1),
                  peak_rss_mb=round(timings.get("peak_rss_mb", 0.0)),
                  perplexity=(metrics.get("perplexity") or {}).get("artifact"),
                  fp32_weight_bytes=4 * manifest["source"]["parameters"],
                  runtime=manifest["runtime"]["runtime"])
    measured = speeds(package, runs)
    result.update({k: round(v, 1) for k, v in measured.items() if k != "load"}, load=round(measured["load"], 2))
    result["host_read_gb_s"] = host_read_gb_s()  # right after the speeds, at the same load
    result["prefill_ms"] = round(1000 * result["prompt_tokens"] / result["prefill_tok_s"], 1)
    return result


def existing(packages: str, runs: int) -> list[dict[str, Any]]:
    """Rows for packages an earlier ``edge-export llm`` call of the large model built (the
    export takes tens of minutes: measure its packages without building them again)."""
    results = []
    for package in map(Path, packages.split(",")):
        manifest = json.loads((package / "manifest.json").read_text())
        base = {"model": LARGE.stem, "target": manifest["target"], "recipe": manifest["recipe"]["name"],
                "context": manifest["generation"]["max_context"], "wall_s": None, "export_load": "–"}
        results.append(measure(base, package, runs))
    return results


def _earlier(report: dict[str, Any]) -> str:
    """Where the rows this run did not measure come from (each keeps its own ``measured``)."""
    kept = [r for r in report["rows"] if not r.get("measured", report["date_utc"]).startswith(report["date_utc"])]
    if not kept:
        return ""
    return " Rows this run did not measure are kept from earlier runs: " + "; ".join(
        f"{r['model']} {r['target']} {r['recipe']}: {r['measured']}" for r in kept) + "."


def _eager(report: dict[str, Any]) -> str:
    """PyTorch eager's speeds on the tiny LM, and the MIL reference executor's decode against it."""
    eager = report.get("eager")
    if not eager:
        return ""
    mil = [r for r in report["rows"] if r["model"] == TINY_LM.stem and r.get("runtime") == "mil-reference"
           and r.get("decode_tok_s")]
    ratios = ", ".join(f"{r['recipe']} {eager['decode_tok_s'] / r['decode_tok_s']:.2f}×" for r in mil)
    return (f"\n\nPyTorch eager on the tiny LM (transformers with its KV cache, the same prompt and "
            f"{NEW_TOKENS} tokens, best of {report['runs']}; {eager['measured']}, load {eager['load']}): prefill "
            f"{eager['prefill_tok_s']:,} tok/s, decode {eager['decode_tok_s']:,} tok/s."
            + (f" The MIL reference executor's decode takes {ratios} eager's time per token (goal ≤ 3×)."
               if ratios else ""))


def _bandwidth(row: dict[str, Any]) -> str:
    """The weight reads a row's decode speed implies (artifact bytes per token × tok/s) beside what the host
    streamed when it was measured; a speed that needs more than the host has is marked, not believed."""
    implied = row["bytes"] * row["decode_tok_s"] / 1e9
    host = row.get("host_read_gb_s")
    if host is None:
        return f"{implied:.1f} (not measured)"
    return f"{implied:.1f} ({host}){' **implausible**' if implied > host else ''}"


def render(report: dict[str, Any]) -> str:
    head = (f"# LLM benchmark\n\nMachine: {report['machine']}; {report['date_utc']}. Produced by `make bench-llm` "
            f"(`bench/llm.py`): each row is one `edge-export llm` process (peak RSS is that whole process: "
            f"load, references, export, generation gates), then `generate` on the package, best of "
            f"{report['runs']} ({NEW_TOKENS} new tokens after a {report['rows'][0].get('prompt_tokens', '?')}-token "
            "prompt). ios runs on the MIL reference executor on Linux (numpy, op by op): a correctness tool, "
            "not Core ML's speed. `export load` / `load` are the 1-minute load averages (2 cores) when the "
            "export process ended / when the speed runs ended."
            + _earlier(report) + "\n\n")
    lines = ["| model | target | recipe | status | bytes | × fp32 | perplexity | export s | peak RSS MB | "
             "export load | prefill ms | prefill tok/s | decode tok/s | weights read GB/s (host) | load |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    fp32 = {(r["model"], r["target"]): r.get("bytes") for r in report["rows"] if r["recipe"] == "fp32"}
    for r in report["rows"]:
        if r["status"] == "error":
            lines.append(f"| {r['model']} | {r['target']} | {r['recipe']} | error: {r['error']} |"
                         + " |" * 11)
            continue
        base = fp32.get((r["model"], r["target"]))
        ratio = f"{r['bytes'] / base:.2f}×" if base else \
            (f"{r['bytes'] / r['fp32_weight_bytes']:.2f}×¹" if r.get("fp32_weight_bytes") else "–")
        ppl = f"{r['perplexity']:.2f}" if r.get("perplexity") else "–"
        lines.append(f"| {r['model']} | {r['target']} | {r['recipe']} | {r['status']} | {r['bytes']:,} | {ratio} | "
                     f"{ppl} | {r['export_s']} | {r['peak_rss_mb']:,} | {r.get('export_load', '–')} | "
                     f"{r['prefill_ms']} | {r['prefill_tok_s']:,} | {r['decode_tok_s']:,} | {_bandwidth(r)} | "
                     f"{r['load']} |")
    large = ("\n\n`weights read GB/s` is the artifact's bytes times the decode tok/s: each decode step reads "
             "every weight once, so it cannot exceed what the host streams (in brackets: `count_nonzero` over 1 GiB, "
             "one thread per core, measured right after the row's speeds). A row above it is marked "
             "**implausible**: its decode figure is not a measurement to rely on."
             "\n\nThe 1.1 B rows (`python bench/llm.py --large`, model `llm_large`: TinyLlama-1.1B-shaped "
             "config, random weights, 4bit, context 512, all large targets in one `edge-export llm` call; goals: "
             "peak RSS ≤ 6.6 GB, artifact ≤ 0.2× fp32, `.pte` decode ≥ 50 tok/s; random weights, so perplexity "
             "means nothing) " + ("are in the table." if report["large"] else "were not run for this table.")
             + " ¹ against the fp32 weights (4 bytes × parameters), where no fp32 artifact was built. A `failed` "
             "1.1 B row is its top-1 gate on random weights (near-flat logits flip under int8 activations; the "
             "package is kept under `.failed/`); before/after figures, the memory strategy and decode speed "
             "against machine load: docs/llm-internals.md, 'Memory'.")
    return head + "\n".join(lines) + _eager(report) + large + "\n"


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--targets", default="android,ios,tflite")
    parser.add_argument("--recipes", default="fp32,4bit")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--large", action="store_true", help="add the 1.1 B 4bit rows")
    parser.add_argument("--large-only", action="store_true", help="only the 1.1 B rows")
    parser.add_argument("--large-targets", default="android", help="targets of the 1.1 B call")
    parser.add_argument("--large-packages", help="comma-separated packages of an earlier 1.1 B call: measure "
                        "them instead of exporting again (implies --large-only)")
    parser.add_argument("--render-only", action="store_true", help="rewrite LLM.md from llm.json")
    args = parser.parse_args()
    if args.render_only:
        (ROOT / "bench" / "LLM.md").write_text(render(json.loads((ROOT / "bench" / "llm.json").read_text())))
        return 0
    args.large_only = args.large_only or bool(args.large_packages)
    jobs = [] if args.large_only else [(str(TINY_LM), [t], r, CONTEXT) for t in args.targets.split(",")
                                       for r in args.recipes.split(",")]
    if (args.large or args.large_only) and not args.large_packages:
        jobs.append((f"{LARGE}:build", args.large_targets.split(","), "4bit", 512))
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="edge-export-bench-llm-") as tmp:
        for i, (model, targets, recipe, context) in enumerate(jobs):
            print(f"{','.join(targets)}-{recipe} ({Path(model.split(':')[0]).stem}) ...", file=sys.stderr, flush=True)
            results += rows(model, targets, recipe, Path(tmp) / str(i), args.runs, context)
            print(f"  {results[-len(targets):]}", file=sys.stderr, flush=True)
    if args.large_packages:
        results += existing(args.large_packages, args.runs)
    date = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    for row in results:
        row["measured"] = f"{date}, best of {args.runs}"
    previous: dict[str, Any] = {}
    if (ROOT / "bench" / "llm.json").exists():  # keep the rows this run did not measure
        previous = json.loads((ROOT / "bench" / "llm.json").read_text())
        measured = {(r["model"], r["target"], r["recipe"]) for r in results}
        results = [r for r in previous["rows"] if (r["model"], r["target"], r["recipe"]) not in measured] + results
    report = {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
                         f"Python {platform.python_version()}",
              "date_utc": date, "runs": args.runs,
              "large": any(r["model"] == LARGE.stem for r in results), "rows": results}
    if not args.large_only:
        report["eager"] = eager_speeds(TINY_LM, args.runs)
    elif previous_eager := previous.get("eager"):
        report["eager"] = previous_eager
    (ROOT / "bench" / "llm.json").write_text(json.dumps(report, indent=2) + "\n")
    (ROOT / "bench" / "LLM.md").write_text(render(report))
    print(render(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
