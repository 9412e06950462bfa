"""``make bench``: edge-export against the libraries used directly, on this machine.

For each model: (a) ``edge-export --target all --no-cache`` vs ``bench/direct.py``, run
alternately, wall time and peak RSS of the whole process tree (main + workers), medians;
(b) a warm-cache re-run; (d) per artifact: bytes and host-runtime latency (from the
package's parity.json: median of 20 runs, 1 thread) vs PyTorch eager (same). Plus (c)
``edge-export --help``. Writes bench/results.json and bench/RESULTS.md and prints the table.

Usage: python bench/run.py [--runs N] [--models digits,transformer,mlp,wide_cnn]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODELS = {
    "digits": "examples/digits.py:build",
    "transformer": "examples/transformer.py:build",
    "mlp": "examples/mlp.py:build",
    "wide_cnn": "bench/models.py:build",
}
EDGE_EXPORT = [sys.executable, "-m", "edge_export"]
GOALS = {"export_ratio": 1.0, "warm_s": 1.0, "help_s": 0.3, "rss_ratio": 1.25}


def _tree_rss(root: int) -> int:
    """Sum of resident memory (bytes) of ``root`` and all its descendants."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        pid = int(entry)
        children.setdefault(int(fields[1]), []).append(pid)
        rss[pid] = int(fields[21]) * os.sysconf("SC_PAGE_SIZE")
    total, stack = 0, [root]
    while stack:
        pid = stack.pop()
        total += rss.get(pid, 0)
        stack.extend(children.get(pid, []))
    return total


def measure(cmd: list[str]) -> dict[str, float]:
    """Wall time and peak process-tree RSS of one run (sampled every 50 ms)."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    peak = [0]

    def sample() -> None:
        while proc.poll() is None:
            peak[0] = max(peak[0], _tree_rss(proc.pid))
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out, err = proc.communicate()
    wall = time.perf_counter() - start
    sampler.join()
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{err.decode()[-2000:]}")
    return {"wall_s": wall, "peak_rss_mb": peak[0] / 2**20, "stdout": out.decode()}


def all_cached(run: dict) -> bool:
    """Whether a --json run took every artifact from the cache (a source edit between
    runs changes the key, and then the 'warm' run was not one)."""
    return all("cached" in p["timings"] for p in json.loads(run["stdout"])["packages"])


def median(runs: list[dict[str, float]], key: str) -> float:
    return round(statistics.median(r[key] for r in runs), 3)


def eager_latency_ms(spec: str, runs: int = 20) -> float:
    code = ("import sys,time,statistics,torch;sys.path.insert(0,'.');torch.set_num_threads(1)\n"
            "from edge_export.loading import load_model\n"
            f"m=load_model({spec!r}, input_specs=[]);x=m.example_inputs\n"
            "t=[]\nwith torch.no_grad():\n m.module(*x)\n"
            f" for _ in range({runs}):\n  s=time.perf_counter();m.module(*x);"
            "t.append((time.perf_counter()-s)*1e3)\nprint(statistics.median(t))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         check=True)
    return round(float(out.stdout.split()[-1]), 4)


def artifacts(run: dict) -> list[dict]:
    """Bytes from each manifest, host latency (median of 20 runs, 1 thread) from --json."""
    rows = []
    for package in json.loads(run["stdout"])["packages"]:
        manifest = json.loads((Path(package["path"]) / "manifest.json").read_text())
        latency = package.get("latency") or {}
        rows.append({"target": package["target"], "recipe": package["recipe"],
                     "bytes": manifest["artifact"]["bytes"], "runtime": manifest["parity"]["runtime"],
                     "latency_ms": latency.get("median_ms"), "parity": manifest["parity"]["status"]})
    return rows


def bench_model(name: str, spec: str, runs: int, work: Path) -> dict:
    ours, direct = [], []
    for i in range(runs):  # alternate, so load changes hit both alike
        out = work / f"{name}-ours-{i}"
        ours.append(measure([*EDGE_EXPORT, "--model", spec, "--target", "all", "--out", str(out),
                             "--no-cache", "--json"]))
        direct.append(measure([sys.executable, "bench/direct.py", spec, str(work / f"{name}-d-{i}")]))
    cache = work / f"{name}-cache"
    measure([*EDGE_EXPORT, "--model", spec, "--target", "all", "--out", str(work / f"{name}-c"),
             "--cache-dir", str(cache), "--json"])
    warm = [measure([*EDGE_EXPORT, "--model", spec, "--target", "all", "--out",
                     str(work / f"{name}-w{i}"), "--cache-dir", str(cache), "--json"])
            for i in range(runs)]
    result = {"spec": spec, "runs": runs,
              "edge_export": {"wall_s": median(ours, "wall_s"), "peak_rss_mb": median(ours, "peak_rss_mb"),
                              "all_wall_s": [round(r["wall_s"], 2) for r in ours]},
              "direct": {"wall_s": median(direct, "wall_s"), "peak_rss_mb": median(direct, "peak_rss_mb"),
                         "all_wall_s": [round(r["wall_s"], 2) for r in direct]},
              "warm": {"wall_s": median(warm, "wall_s"), "peak_rss_mb": median(warm, "peak_rss_mb"),
                       "all_cached": all(all_cached(r) for r in warm)},
              "eager_latency_ms": eager_latency_ms(spec),
              "artifacts": artifacts(ours[0])}
    result["export_ratio"] = round(result["edge_export"]["wall_s"] / result["direct"]["wall_s"], 3)
    result["rss_ratio"] = round(result["edge_export"]["peak_rss_mb"] / result["direct"]["peak_rss_mb"], 3)
    return result


def interpreter_start_s(runs: int = 5) -> float:
    return median([measure([sys.executable, "-c", "pass"]) for _ in range(runs)], "wall_s")


def machine() -> dict:
    load = os.getloadavg()
    return {"cpu": _cpu_name(), "cores": os.cpu_count(), "python": platform.python_version(),
            "os": platform.platform(), "load_avg_1m_at_start": round(load[0], 2),
            "date": time.strftime("%Y-%m-%d %H:%M", time.gmtime())}


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def markdown(results: dict) -> str:
    m = results["machine"]
    lines = [f"Machine: {m['cpu']}, {m['cores']} cores, Python {m['python']}, {m['os']}; "
             f"load average {m['load_avg_1m_at_start']} at start; {m['date']} UTC. "
             f"Medians of {results['runs']} alternating runs.", "",
             f"`edge-export --help`: {results['help_s']:.3f} s (goal ≤ {GOALS['help_s']} s); "
             f"bare interpreter start: {results['interpreter_s']:.3f} s.", "",
             "| model | edge-export all (s) | direct script (s) | ratio (goal ≤ 1.0) | peak RSS ours / direct (MB) "
             "| RSS ratio (goal ≤ 1.25) | warm re-run (s, goal ≤ 1 + start) |",
             "|---|---|---|---|---|---|---|"]
    for name, r in results["models"].items():
        lines.append(f"| {name} | {r['edge_export']['wall_s']:.1f} | {r['direct']['wall_s']:.1f} | "
                     f"{r['export_ratio']:.2f} | {r['edge_export']['peak_rss_mb']:.0f} / "
                     f"{r['direct']['peak_rss_mb']:.0f} | {r['rss_ratio']:.2f} | {r['warm']['wall_s']:.2f}"
                     f"{'' if r['warm']['all_cached'] else ' (not all cached!)'} |")
    lines += ["", "| model | target | artifact bytes | host runtime | latency (ms) | PyTorch eager (ms) |",
              "|---|---|---|---|---|---|"]
    for name, r in results["models"].items():
        for a in r["artifacts"]:
            latency = f"{a['latency_ms']:.3f}" if a["latency_ms"] is not None else "not run"
            lines.append(f"| {name} | {a['target']} | {a['bytes']:,} | {a['runtime']} | {latency} | "
                         f"{r['eager_latency_ms']:.3f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--models", default=",".join(MODELS))
    args = parser.parse_args()
    results = {"machine": machine(), "runs": args.runs, "goals": GOALS,
               "interpreter_s": interpreter_start_s(),
               "help_s": median([measure([*EDGE_EXPORT, "--help"]) for _ in range(5)], "wall_s"),
               "models": {}}
    work = Path(tempfile.mkdtemp(prefix="edge-export-bench-"))
    try:
        for name in args.models.split(","):
            print(f"bench: {name} ...", file=sys.stderr, flush=True)
            results["models"][name] = bench_model(name, MODELS[name], args.runs, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    (ROOT / "bench" / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    table = markdown(results)
    (ROOT / "bench" / "RESULTS.md").write_text("# Benchmark results\n\n" + table)
    print(table)


if __name__ == "__main__":
    main()
