"""``make bench-llm`` (part of ``make bench``): LLM rows per target and recipe.

Each (target, recipe) is exported by the real CLI in its own process (``edge-export llm``), so the
manifest's peak RSS is that export's alone; prefill and decode speeds come from
``edge_export.llm.generate`` on the package (the same code as ``edge-export generate``), best of
``--runs``, with the load average beside every figure. Writes bench/llm.json and bench/LLM.md.

The 1.1 B row (``--large``: a TinyLlama-1.1B-shaped Llama with random weights, 4bit, android) is a
benchmark, not a test: ~13 GB and tens of minutes on 2 cores, so it only runs when asked.

Usage: python bench/llm.py [--targets android,ios,tflite] [--recipes fp32,4bit] [--runs 3] [--large]
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

ROOT = Path(__file__).resolve().parent.parent
TINY_LM = ROOT / "examples" / "tiny_lm"
LARGE = ROOT / "bench" / "llm_large.py"
PROMPT = "The for statement is used to iterate over the elements of a sequence"
CONTEXT = 256
NEW_TOKENS = 64


def export(model: str, target: str, recipe: str, out: Path, context: int) -> tuple[Path | None, str, float]:
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "edge_export", "llm", "--model", model, "--target", target,
                           "--recipe", recipe, "--max-context", str(context), "--name", "bench",
                           "--out", str(out)], cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - start
    package = out / "bench-0.1.0" / f"{target}-{recipe}"
    if proc.returncode != 0 or not package.exists():
        return None, " ".join(proc.stderr.strip().splitlines()[-1:])[:200], wall
    return package, "", wall


def speeds(package: Path, runs: int) -> dict[str, float]:
    from edge_export.llm.generate import generate

    best: dict[str, float] = {}
    for _ in range(runs):
        stats = generate(package, PROMPT, NEW_TOKENS, out=io.StringIO(), err=io.StringIO())
        for key in ("prefill_tok_s", "decode_tok_s"):
            best[key] = max(best.get(key, 0.0), stats[key])
        best["prompt_tokens"] = stats["prompt_tokens"]
    return best


def row(model: str, target: str, recipe: str, out: Path, runs: int, context: int) -> dict[str, Any]:
    package, error, wall = export(model, target, recipe, out, context)
    result: dict[str, Any] = {"model": Path(model.split(":")[0]).stem, "target": target, "recipe": recipe,
                              "context": context, "wall_s": round(wall, 1), "load": round(os.getloadavg()[0], 2)}
    if package is None:
        return {**result, "status": "error", "error": error}
    manifest = json.loads((package / "manifest.json").read_text())
    timings = manifest.get("timings", {})
    metrics = manifest["parity"]["metrics"]
    result.update(status=manifest["parity"]["status"], bytes=manifest["artifact"]["bytes"],
                  export_s=round(timings.get("export_s", 0.0), 1),
                  peak_rss_mb=round(timings.get("peak_rss_mb", 0.0)),
                  perplexity=(metrics.get("perplexity") or {}).get("artifact"),
                  runtime=manifest["runtime"]["runtime"])
    result.update({k: round(v, 1) for k, v in speeds(package, runs).items()})
    result["prefill_ms"] = round(1000 * result["prompt_tokens"] / result["prefill_tok_s"], 1)
    return result


def render(report: dict[str, Any]) -> str:
    head = (f"# LLM benchmark\n\nMachine: {report['machine']}; {report['date_utc']}. Produced by `make bench-llm` "
            f"(`bench/llm.py`): each row is one `edge-export llm` process (peak RSS is that whole process: "
            f"load, references, export, generation gates), then `generate` on the package, best of "
            f"{report['runs']} ({NEW_TOKENS} new tokens after a {report['rows'][0].get('prompt_tokens', '?')}-token "
            "prompt). ios runs on the MIL reference executor on Linux (numpy, op by op): a correctness tool, "
            "not Core ML's speed. `load` is the 1-minute load average when the row finished (2 cores).\n\n")
    lines = ["| model | target | recipe | status | bytes | × fp32 | perplexity | export s | peak RSS MB | "
             "prefill ms | prefill tok/s | decode tok/s | load |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    fp32 = {(r["model"], r["target"]): r.get("bytes") for r in report["rows"] if r["recipe"] == "fp32"}
    for r in report["rows"]:
        if r["status"] == "error":
            lines.append(f"| {r['model']} | {r['target']} | {r['recipe']} | error: {r['error']} |"
                         + " |" * 9)
            continue
        base = fp32.get((r["model"], r["target"]))
        ratio = f"{r['bytes'] / base:.2f}×" if base else "–"
        ppl = f"{r['perplexity']:.2f}" if r.get("perplexity") else "–"
        lines.append(f"| {r['model']} | {r['target']} | {r['recipe']} | {r['status']} | {r['bytes']:,} | {ratio} | "
                     f"{ppl} | {r['export_s']} | {r['peak_rss_mb']:,} | {r['prefill_ms']} | {r['prefill_tok_s']:,} | "
                     f"{r['decode_tok_s']:,} | {r['load']} |")
    large = ("\n\nThe 1.1 B row (`python bench/llm.py --large`: TinyLlama-1.1B-shaped config, random weights, "
             "android 4bit; goals: peak RSS ≤ 6.6 GB, `.pte` ≤ 0.2× fp32, decode ≥ 50 tok/s) "
             + ("is in the table." if report["large"] else "was not run for this table."))
    return head + "\n".join(lines) + large + "\n"


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--targets", default="android,ios,tflite")
    parser.add_argument("--recipes", default="fp32,4bit")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--large", action="store_true", help="add the 1.1 B android 4bit row")
    args = parser.parse_args()
    jobs = [(str(TINY_LM), t, r, CONTEXT) for t in args.targets.split(",") for r in args.recipes.split(",")]
    if args.large:
        jobs.append((f"{LARGE}:build", "android", "4bit", 512))
    rows = []
    with tempfile.TemporaryDirectory(prefix="edge-export-bench-llm-") as tmp:
        for i, (model, target, recipe, context) in enumerate(jobs):
            print(f"{target}-{recipe} ({Path(model.split(':')[0]).stem}) ...", file=sys.stderr, flush=True)
            rows.append(row(model, target, recipe, Path(tmp) / str(i), args.runs, context))
            print(f"  {rows[-1]}", file=sys.stderr, flush=True)
    report = {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
                         f"Python {platform.python_version()}",
              "date_utc": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "runs": args.runs,
              "large": args.large, "rows": rows}
    (ROOT / "bench" / "llm.json").write_text(json.dumps(report, indent=2) + "\n")
    (ROOT / "bench" / "LLM.md").write_text(render(report))
    print(render(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
