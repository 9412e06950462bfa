"""Run the conformance zoo through the real edge-export CLI and write the coverage table.

Each model of ``zoo/models.py`` is exported once, fp32, to all three targets, by the installed
CLI in a subprocess (``--json --jobs 1 --no-cache``), exactly as a user would call it; the
result per target comes from the CLI's JSON. A failure of the whole run (the model did not
load or export) counts against every target. Writes ``coverage.json`` and ``COVERAGE.md``.

    .venv/bin/python zoo/run.py                       # the full zoo into docs/
    .venv/bin/python zoo/run.py --slice --out-dir /tmp/cov
    .venv/bin/python zoo/run.py --models bert,llama --timeout 300
    .venv/bin/python zoo/run.py --latency --models small_cnn,efficientnet_lite0,vit
                                                      # docs/LATENCY.md only

Host latency comes from ``edge-export latency`` on the packages of each run: three
warm-up runs, then every artifact and PyTorch eager interleaved, one thread, min /
median / p90 with the load average; tables show the min (what other load disturbs least).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
MODELS_FILE = ROOT / "zoo" / "models.py"
CLI = Path(sys.executable).parent / "edge-export"
TARGETS = ("android", "ios", "tflite", "coreai")
# CI's representative slice: a CNN, a text encoder, a decoder, a compressed input, real weights.
SLICE = ("small_cnn", "bert", "llama", "pruned_unstructured", "all_minilm_l6_v2")
# A whole-run exit code names what happened to every target.
RUN_RESULT = {1: "failed", 2: "refused", 3: "error"}
MARK = {"passed": "✅", "failed": "❌", "error": "💥", "refused": "⛔", "not-run": "⚪"}
LATENCY_RUNS = 20
LAG = 1.5  # a runtime this many times slower than another on the same model gets a note
NOTES_MARKER = "<!-- notes: kept when the table is regenerated -->"
CELL_CAUSE_CHARS = 110  # the table's cell; coverage.json keeps the whole line


def _zoo() -> dict[str, Any]:
    sys.path.insert(0, str(MODELS_FILE.parent))
    import models  # noqa: PLC0415 - zoo/ is not a package; load it only when run

    return models.ZOO


def one_line(text: str | None, limit: int = 220) -> str:
    line = " ".join((text or "").split())
    return line if len(line) <= limit else line[:limit - 1] + "…"


def worst_cosine(parity: dict) -> float | None:
    values = [m["cosine"] for m in parity.get("outputs", {}).values()
              if m.get("cosine") is not None]
    return min(values) if values else None


def target_row(package: dict) -> dict[str, Any]:
    parity = package.get("parity") or {}
    status = package.get("status") or "error"
    timings = package.get("timings") or {}
    latency = package.get("latency") or {}
    return {
        "result": status,
        "worst_cosine": worst_cosine(parity),
        "bytes": package.get("bytes"),
        "seconds": round(sum(timings.values()), 2) if timings else None,
        "latency_ms": latency.get("min_ms"),
        "runtime": parity.get("runtime") or "",
        "path": package.get("path"),
        "cause": "" if status == "passed" else one_line(parity.get("reason")) or status,
    }


def rows_from_run(stdout: str, returncode: int) -> dict[str, dict[str, Any]]:
    """Per target row from the CLI's one JSON object; a run-level error applies to every target."""
    try:
        report = json.loads(stdout)
    except json.JSONDecodeError:
        report = {"error": {"message": f"no JSON on stdout (exit {returncode})"}}
    by_target = {p["target"]: target_row(p) for p in report.get("packages", [])}
    error = report.get("error") or {}
    missing = {"result": RUN_RESULT.get(error.get("code", returncode), "error"),
               "worst_cosine": None, "bytes": None, "seconds": None, "latency_ms": None,
               "runtime": "", "cause": one_line(error.get("message")) or f"exit {returncode}"}
    for skipped in report.get("skipped", []):  # --target all left it out: refused the model, or not installed
        refused = skipped.get("refused")
        by_target.setdefault(skipped["target"], {
            **missing, "result": "refused" if refused else "not-run",
            "cause": one_line(refused or f"not installed: it needs {', '.join(skipped.get('missing', []))}")})
    return {t: by_target.get(t, missing) for t in TARGETS}


def eager_latency_ms(name: str) -> float | None:
    """PyTorch eager on one thread, min after warm-up (edge_export.verify.latency), in this process."""
    import torch

    from edge_export.verify.latency import limit_threads, single

    try:
        module, inputs = _zoo()[name].build()  # already in eval mode (PT2E ones refuse .eval())
    except Exception:  # noqa: BLE001 - the builder's failure already shows in the CLI row
        return None
    limit_threads(1)
    with torch.no_grad():
        return single(lambda: module(*inputs), runs=LATENCY_RUNS)["min_ms"]


def measure_latency(name: str, targets: dict[str, dict]) -> dict[str, Any]:
    """``edge-export latency`` on the passing packages and the model in eager, interleaved.
    Fills each target's ``latency_ms`` (the min) and returns the whole measurement."""
    paths = [c["path"] for c in targets.values() if c["result"] == "passed" and c.get("path")]
    cmd = [str(CLI), "latency", *paths, "--model", f"{MODELS_FILE}:{name}", "--threads", "1",
           "--runs", str(LATENCY_RUNS), "--json"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, check=False)
    if proc.returncode != 0 or not paths:
        return {"error": one_line(proc.stderr.strip().splitlines()[-1] if proc.stderr.strip()
                                  else f"exit {proc.returncode}")}
    result = json.loads(proc.stdout)
    for row in result["results"]:
        if row["target"] in targets:
            targets[row["target"]]["latency_ms"] = row.get("min_ms")
    return result


def run_model(name: str, out: Path, timeout: float, interleaved: bool = False) -> dict[str, Any]:
    """Export to every target through the CLI; with ``interleaved``, then time the packages
    that passed and eager side by side (``edge-export latency``)."""
    cmd = [str(CLI), "--model", f"{MODELS_FILE}:{name}", "--target", "all", "--json",
           "--jobs", "1", "--no-cache", "--name", name.replace("_", "-"), "--out", str(out)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    start = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env,
                              cwd=ROOT, check=False)
        targets = rows_from_run(proc.stdout, proc.returncode)
    except subprocess.TimeoutExpired:
        timed_out = {"result": "error", "worst_cosine": None, "bytes": None, "seconds": None,
                     "latency_ms": None, "runtime": "", "cause": f"timed out after {timeout:.0f} s"}
        targets = {t: dict(timed_out) for t in TARGETS}
    wall = round(time.perf_counter() - start, 1)
    if not interleaved:  # the coverage table: each package's own latency from the export
        return {"wall_seconds": wall, "targets": targets, "eager_latency_ms": eager_latency_ms(name)}
    latency = measure_latency(name, targets)
    eager = next((r for r in latency.get("results", []) if r["target"] == "pytorch"), {})
    return {"wall_seconds": wall, "targets": targets, "latency": latency,
            "eager_latency_ms": eager.get("min_ms")}


def totals(rows: list[dict]) -> dict[str, dict[str, Any]]:
    result = {}
    for target in TARGETS:
        counts = Counter(r["targets"][target]["result"] for r in rows)
        result[target] = {**counts, "total": len(rows),
                          "pass_rate": round(counts["passed"] / len(rows), 4) if rows else 0.0}
    return result


def cause_key(cause: str) -> str:
    """Group causes that differ only in numbers, shapes or quoted names (class, op, node)."""
    key = re.sub(r"\d+(\.\d+)?(e-?\d+)?", "N", cause)
    key = re.sub(r"N(?:xN)+(?:, N(?:xN)+)*", "SHAPE", key)
    return re.sub(r"'[^']*'", "'…'", key)[:160]


def top_causes(rows: list[dict]) -> list[dict[str, Any]]:
    counts: Counter[str] = Counter()
    where: dict[str, list[str]] = {}
    for row in rows:
        for target, cell in row["targets"].items():
            if cell["result"] != "passed":
                key = cause_key(cell["cause"])
                counts[key] += 1
                where.setdefault(key, []).append(f"{row['name']}/{target}")
    return [{"cause": k, "count": n, "where": where[k]} for k, n in counts.most_common()]


def fastest(row: dict) -> str:
    """The fastest passing target on a real runtime (the MIL reference executor is numpy)."""
    timed = {t: c["latency_ms"] for t, c in row["targets"].items()
             if c["result"] == "passed" and c["latency_ms"] is not None
             and c["runtime"] != "mil-reference"}
    return min(timed, key=timed.get) if timed else "–"


def _cell(cell: dict) -> str:
    parts = [MARK.get(cell["result"], "?") + " " + cell["result"]]
    if cell["worst_cosine"] is not None:
        parts.append(f"{cell['worst_cosine']:.4f}")
    if cell["bytes"]:
        parts.append(f"{cell['bytes'] / 1024:,.0f} KiB")
    if cell["seconds"] is not None:
        parts.append(f"{cell['seconds']:.1f} s")
    text = " · ".join(parts)
    if cell["cause"]:
        text += "<br>" + one_line(cell["cause"], CELL_CAUSE_CHARS).replace("|", "/")
    return text


def _ms(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"


def render_markdown(report: dict) -> str:
    meta, rows = report["measured_on"], report["models"]
    lines = [
        "# Conformance zoo: coverage", "",
        f"Measured on commit `{meta['commit']}` (last core change: `{meta['core_commit']}`; "
        f"{meta['date']}, {meta['machine']}), "
        "fp32, by `make zoo` (`zoo/run.py`): each model of `zoo/models.py` exported by the "
        "real CLI (`--target all --json --jobs 1 --no-cache`). A cell gives the result, the "
        "worst cosine against PyTorch, the artifact size and the target's build seconds "
        "(lower + verify + package). ios parity runs on the MIL reference executor.", "",
        "Models are handed over as users have them: transformers models exactly as "
        "transformers builds them (`ModelOutput` outputs, int64 token ids plus attention "
        "masks), compressed models as the user compressed them (prune masks attached, torchao "
        "`quantize_`, a PT2E-converted GraphModule, `.half()`, `channels_last`, an NHWC-strided "
        "input). A run-level failure (load or export) counts against every target.", "",
        "Results: ✅ passed · ❌ failed (a parity gate) · 💥 error (the toolchain failed) · "
        "⛔ refused (bad input, exit 2) · ⚪ not-run (parity could not run).", "",
        "| model | architecture | kind | " + " | ".join(TARGETS) + " | wall s |",
        "|---|---|---|" + "---|" * len(TARGETS) + "---|"]
    for row in rows:
        cells = " | ".join(_cell(row["targets"][t]) for t in TARGETS)
        lines.append(f"| `{row['name']}` | {row['architecture']} | {row['kind']} | {cells} | "
                     f"{row['wall_seconds']:.0f} |")
    total = report["totals"]
    lines.append("| **passed** | | | " + " | ".join(
        f"**{total[t].get('passed', 0)}/{total[t]['total']} ({total[t]['pass_rate']:.0%})**"
        for t in TARGETS) + " | |")
    lines += ["", "## Totals per target", "",
              "| target | passed | failed | error | refused | not-run | pass rate |",
              "|---|---|---|---|---|---|---|"]
    for t in TARGETS:
        c = total[t]
        lines.append(f"| {t} | {c.get('passed', 0)} | {c.get('failed', 0)} | "
                     f"{c.get('error', 0)} | {c.get('refused', 0)} | {c.get('not-run', 0)} | "
                     f"{c['pass_rate']:.1%} |")
    lines += ["", "## Failure causes", "", "| count | cause | where |", "|---|---|---|"]
    for cause in report["failure_causes"]:
        where = ", ".join(cause["where"][:6]) + (" …" if len(cause["where"]) > 6 else "")
        lines.append(f"| {cause['count']} | {cause['cause'].replace('|', '/')} | {where} |")
    lines += ["", "## Host latency (ms, min of 20 runs after warm-up, 1 thread)", "",
              "Each package's latency as its export measured it, eager in the runner; the min is "
              "what other load on the machine disturbs least. ios runs on the MIL reference "
              "executor (numpy), not Core ML, so `fastest` compares android and tflite only. "
              "docs/LATENCY.md compares targets interleaved, with median, p90 and the load.", "",
              "| model | eager | " + " | ".join(TARGETS) + " | fastest |",
              "|---|---|" + "---|" * len(TARGETS) + "---|"]
    for row in rows:
        cells = " | ".join(_ms(row["targets"][t]["latency_ms"]) for t in TARGETS)
        lines.append(f"| `{row['name']}` | {_ms(row['eager_latency_ms'])} | {cells} | "
                     f"{fastest(row)} |")
    return "\n".join(lines) + "\n"


def lags(row: dict) -> list[str]:
    """Pairs of device runtimes on this model where one is > LAG times slower (by min)."""
    timed = {t: c["latency_ms"] for t, c in row["targets"].items()
             if c["latency_ms"] and c["runtime"] != "mil-reference"}
    slow = [(a, b, timed[a] / timed[b]) for a in timed for b in timed if timed[a] > LAG * timed[b]]
    return [f"{a} {ratio:.1f}× {b}" for a, b, ratio in slow]


def render_latency(report: dict) -> str:
    meta, rows = report["measured_on"], report["models"]
    lines = ["# Host latency per model and target", "",
             f"Measured on commit `{meta['commit']}` ({meta['date']}, {meta['machine']}) by "
             "`zoo/run.py --latency` (`make zoo-latency`): each model exported fp32 to every target "
             "by the CLI, then `edge-export latency PACKAGES --model SPEC --threads 1`: 3 warm-up "
             f"runs, then {LATENCY_RUNS} runs of every artifact and of PyTorch eager, interleaved. "
             "Cells: **min** ms (what other load disturbs least) · median · p90, and min / eager. "
             "ios runs on the MIL reference executor (numpy) on Linux: a correctness tool, not "
             "Core ML, so `fastest` leaves it out. `load` is the 1-minute load average during the "
             "measurement (cores in the header): above the core count, medians and p90 are "
             "disturbed, the min much less.", "",
             "| model | eager | " + " | ".join(TARGETS) + " | fastest | lags > 1.5× | load |",
             "|---|---|" + "---|" * len(TARGETS) + "---|---|---|"]
    for row in rows:
        latency = row.get("latency") or {}
        by_target = {r["target"]: r for r in latency.get("results", [])}

        def cell(r: dict | None) -> str:
            if not r or r.get("min_ms") is None:
                return "–"
            ratio = f" ({r['vs_eager']:.2f}×)" if "vs_eager" in r and r["target"] != "pytorch" else ""
            return f"**{r['min_ms']:.3f}**{ratio} · {r['median_ms']:.3f} · {r['p90_ms']:.3f}"

        cells = " | ".join(cell(by_target.get(t)) if row["targets"][t]["result"] == "passed"
                           else row["targets"][t]["result"] for t in TARGETS)
        lines.append(f"| `{row['name']}` | {cell(by_target.get('pytorch'))} | {cells} | "
                     f"{fastest(row)} | {', '.join(lags(row)) or '–'} | "
                     f"{latency.get('load_avg_1m', '–')} |")
    return "\n".join(lines) + "\n"


def _measured_on() -> dict[str, str]:
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, text=True,
                            capture_output=True, check=False).stdout.strip() or "unknown"
    core = subprocess.run(["git", "log", "-1", "--format=%h %s", "--", "edge_export", "exporters",
                           "recipes"], cwd=ROOT, text=True, capture_output=True,
                          check=False).stdout.strip() or "unknown"
    return {"commit": commit, "core_commit": core, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "machine": f"{platform.system()} {platform.machine()}, {os.cpu_count()} cores"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", help="comma-separated zoo model names (default: all)")
    parser.add_argument("--slice", action="store_true", help="the representative CI slice")
    parser.add_argument("--timeout", type=float, default=900, help="seconds per model")
    parser.add_argument("--out-dir", type=Path, default=ROOT / "docs",
                        help="where coverage.json and COVERAGE.md go")
    parser.add_argument("--latency", action="store_true",
                        help="write only the latency table (LATENCY.md, latency.json), not the "
                             "coverage files: for a subset of the zoo")
    args = parser.parse_args(argv)
    zoo = _zoo()
    names = (args.models.split(",") if args.models else list(SLICE) if args.slice
             else list(zoo))
    unknown = [n for n in names if n not in zoo]
    if unknown:
        parser.error(f"unknown zoo models: {', '.join(unknown)}")
    measured_on = _measured_on()
    rows = []
    with tempfile.TemporaryDirectory(prefix="edge-export-zoo-") as out:
        for name in names:
            row = {"name": name, "architecture": zoo[name].architecture, "kind": zoo[name].kind,
                   **run_model(name, Path(out), args.timeout, interleaved=args.latency)}
            rows.append(row)
            print(f"{name:24s} " + "  ".join(f"{t}={row['targets'][t]['result']}"
                                             for t in TARGETS)
                  + f"  {row['wall_seconds']:.0f}s", file=sys.stderr, flush=True)
    report = {"measured_on": measured_on, "targets": list(TARGETS), "models": rows,
              "totals": totals(rows), "failure_causes": top_causes(rows)}
    args.out_dir.mkdir(parents=True, exist_ok=True)
    if args.latency:
        (args.out_dir / "latency.json").write_text(json.dumps(report, indent=2) + "\n")
        path = args.out_dir / "LATENCY.md"
        notes = path.read_text().partition(NOTES_MARKER)[2] if path.exists() else "\n"
        path.write_text(render_latency(report) + "\n" + NOTES_MARKER + notes)
        return 0
    (args.out_dir / "coverage.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out_dir / "COVERAGE.md").write_text(render_markdown(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
