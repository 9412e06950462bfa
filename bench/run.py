"""``make bench``: edge-export against the libraries used directly, on this machine.

For each model: (a) ``edge-export --target all --no-cache`` vs ``bench/direct.py``, run
alternately, wall time and peak RSS of the whole process tree (main + workers), medians;
(b) a warm-cache re-run (the fast path: no torch); (d) per artifact, from the packages
of (a): host latency measured by ``edge-export latency`` (warm-up, then every artifact and
PyTorch eager interleaved, one thread; min / median / p90, compared on the min, which is
what other load on the machine disturbs least). Plus (c) ``edge-export --help``. Every
figure is printed beside its goal with the load average it was measured under, and
written to bench/results.json and bench/RESULTS.md.

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
GOALS = {"export_ratio": 1.0, "warm_s": 1.0, "help_s": 0.3, "rss_ratio": 1.25,
         "mil_vs_eager": 3.0}
LATENCY_RUNS = 20
README_START, README_END = "<!-- bench-table -->", "<!-- /bench-table -->"


def _pss(pid: int) -> int:
    """Proportional set size (bytes): shared pages (libtorch's text, mapped by every process
    that imports torch) split between the processes mapping them, so a sum over processes
    counts each page once: what the machine pays. 0 where the kernel does not report it."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as fh:
            for line in fh:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def _tree_rss(root: int) -> tuple[int, int]:
    """Sums of resident memory and of PSS (bytes) of ``root`` and all its descendants."""
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
    total, pss, stack = 0, 0, [root]
    while stack:
        pid = stack.pop()
        total += rss.get(pid, 0)
        pss += _pss(pid) if pid in rss else 0
        stack.extend(children.get(pid, []))
    return total, pss


def measure(cmd: list[str]) -> dict[str, float]:
    """Wall time and peak process-tree RSS of one run (sampled every 50 ms), and the
    1-minute load average when it started."""
    load = round(os.getloadavg()[0], 2)
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    peak = [0, 0]

    def sample() -> None:
        while proc.poll() is None:
            rss, pss = _tree_rss(proc.pid)
            peak[0], peak[1] = max(peak[0], rss), max(peak[1], pss)
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out, err = proc.communicate()
    wall = time.perf_counter() - start
    sampler.join()
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{err.decode()[-2000:]}")
    return {"wall_s": wall, "peak_rss_mb": peak[0] / 2**20, "peak_pss_mb": peak[1] / 2**20,
            "stdout": out.decode(), "load": load}


def all_cached(run: dict) -> bool:
    """Whether a --json run took every artifact from the cache (a source edit between
    runs changes the key, and then the 'warm' run was not one)."""
    return all("cached" in p["timings"] for p in json.loads(run["stdout"])["packages"])


def median(runs: list[dict[str, float]], key: str) -> float:
    return round(statistics.median(r[key] for r in runs), 3)


def latency(run: dict, spec: str) -> dict:
    """``edge-export latency`` on the packages of one cold run, with eager, interleaved."""
    paths = [p["path"] for p in json.loads(run["stdout"])["packages"]]
    out = subprocess.run([*EDGE_EXPORT, "latency", *paths, "--model", spec, "--threads", "1",
                          "--runs", str(LATENCY_RUNS), "--json"], cwd=ROOT, capture_output=True,
                         text=True, check=True)
    return json.loads(out.stdout)


def artifacts(run: dict) -> list[dict]:
    """Bytes and runtime from each manifest."""
    rows = []
    for package in json.loads(run["stdout"])["packages"]:
        manifest = json.loads((Path(package["path"]) / "manifest.json").read_text())
        rows.append({"target": package["target"], "recipe": package["recipe"],
                     "bytes": manifest["artifact"]["bytes"], "runtime": manifest["parity"]["runtime"],
                     "parity": manifest["parity"]["status"]})
    return rows


def bench_model(name: str, spec: str, runs: int, work: Path) -> dict:
    ours, parallel, direct = [], [], []
    for i in range(runs):  # alternate, so load changes hit all alike
        out = work / f"{name}-ours-{i}"
        ours.append(measure([*EDGE_EXPORT, "--model", spec, "--target", "all", "--out", str(out),
                             "--no-cache", "--json"]))
        # --jobs 2: two worker processes, each with its own torch and toolchain
        parallel.append(measure([*EDGE_EXPORT, "--model", spec, "--target", "all", "--out",
                                 str(work / f"{name}-parallel-{i}"), "--no-cache", "--json", "--jobs", "2"]))
        direct.append(measure([sys.executable, "bench/direct.py", spec, str(work / f"{name}-d-{i}")]))
    cache = work / f"{name}-cache"
    measure([*EDGE_EXPORT, "--model", spec, "--target", "all", "--out", str(work / f"{name}-c"),
             "--cache-dir", str(cache), "--json"])
    warm = [measure([*EDGE_EXPORT, "--model", spec, "--target", "all", "--out",
                     str(work / f"{name}-w{i}"), "--cache-dir", str(cache), "--json"])
            for i in range(runs)]
    # the same command again into a folder that already holds these packages: the usual
    # re-run of a build script (nothing to re-publish when they are the cache's files)
    again = [measure([*EDGE_EXPORT, "--model", spec, "--target", "all", "--out",
                      str(work / f"{name}-w0"), "--cache-dir", str(cache), "--json"])
             for _ in range(runs)]
    result = {"spec": spec, "runs": runs,
              "measured": {"date": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
                           "load_avg_1m_at_start": ours[0]["load"]},
              "edge_export": {"wall_s": median(ours, "wall_s"), "peak_rss_mb": median(ours, "peak_rss_mb"),
                              "peak_pss_mb": median(ours, "peak_pss_mb"),
                              "all_wall_s": [round(r["wall_s"], 2) for r in ours]},
              "jobs_2": {"wall_s": median(parallel, "wall_s"), "peak_rss_mb": median(parallel, "peak_rss_mb"),
                         "all_wall_s": [round(r["wall_s"], 2) for r in parallel]},
              "direct": {"wall_s": median(direct, "wall_s"), "peak_rss_mb": median(direct, "peak_rss_mb"),
                         "peak_pss_mb": median(direct, "peak_pss_mb"),
                         "all_wall_s": [round(r["wall_s"], 2) for r in direct]},
              "warm": {"wall_s": median(warm, "wall_s"), "peak_rss_mb": median(warm, "peak_rss_mb"),
                       "all_cached": all(all_cached(r) for r in warm),
                       "all_wall_s": [round(r["wall_s"], 2) for r in warm]},
              "warm_same_out": {"wall_s": median(again, "wall_s"),
                                "all_cached": all(all_cached(r) for r in again),
                                "all_wall_s": [round(r["wall_s"], 2) for r in again]},
              "load": {"cold": [r["load"] for r in ours], "direct": [r["load"] for r in direct],
                       "jobs_2": [r["load"] for r in parallel],
                       "warm": [r["load"] for r in warm], "warm_same_out": [r["load"] for r in again]},
              "latency": latency(ours[0], spec),
              "artifacts": artifacts(ours[0])}
    result["export_ratio"] = round(result["edge_export"]["wall_s"] / result["direct"]["wall_s"], 3)
    result["rss_ratio"] = round(result["edge_export"]["peak_rss_mb"] / result["direct"]["peak_rss_mb"], 3)
    result["jobs_2_export_ratio"] = round(result["jobs_2"]["wall_s"] / result["direct"]["wall_s"], 3)
    result["jobs_2_rss_ratio"] = round(result["jobs_2"]["peak_rss_mb"] / result["direct"]["peak_rss_mb"], 3)
    if result["direct"]["peak_pss_mb"]:
        result["pss_ratio"] = round(result["edge_export"]["peak_pss_mb"] / result["direct"]["peak_pss_mb"], 3)
    mil = [r for r in result["latency"]["results"] if r.get("runtime") == "mil-reference"]
    result["mil_vs_eager"] = mil[0].get("vs_eager") if mil else None
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


def _met(value: float | None, goal: float) -> str:
    return "–" if value is None else ("✅" if value <= goal else "❌")


def markdown(results: dict) -> str:
    m = results["machine"]
    busy = m["load_avg_1m_at_start"] > m["cores"]
    lines = [f"Machine: {m['cpu']}, {m['cores']} cores, Python {m['python']}, {m['os']}; "
             f"load average {m['load_avg_1m_at_start']} at start{' (BUSY: load > cores)' if busy else ''}; "
             f"{m['date']} UTC. Medians of {results['runs']} alternating runs; the load average "
             "when each figure was measured is beside it.", "",
             f"`edge-export --help`: {results['help_s']:.3f} s (goal ≤ {GOALS['help_s']} s); "
             f"bare interpreter start: {results['interpreter_s']:.3f} s.", "",
             "| model | figure | measured | goal | met | load |", "|---|---|---|---|---|---|"]
    for name, r in results["models"].items():
        ours, direct, warm = r["edge_export"], r["direct"], r["warm"]
        load = r["load"]
        rows = [
            ("cold `--target all` / direct script", f"{r['export_ratio']:.2f}× ({ours['wall_s']:.1f} s / "
             f"{direct['wall_s']:.1f} s)", f"≤ {GOALS['export_ratio']}×",
             _met(r["export_ratio"], GOALS["export_ratio"]), f"{max(load['cold'] + load['direct'])}"),
            ("summed peak RSS / direct script", f"{r['rss_ratio']:.2f}× ({ours['peak_rss_mb']:.0f} / "
             f"{direct['peak_rss_mb']:.0f} MB)", f"≤ {GOALS['rss_ratio']}×", _met(r["rss_ratio"], GOALS["rss_ratio"]),
             f"{max(load['cold'] + load['direct'])}"),
            ("warm re-run (wall), new `--out`",
             f"{warm['wall_s']:.2f} s{'' if warm['all_cached'] else ' (not all cached!)'}",
             f"≤ {GOALS['warm_s']} s", _met(warm["wall_s"], GOALS["warm_s"]), f"{max(load['warm'])}"),
            ("MIL reference / eager (min)", "–" if r["mil_vs_eager"] is None else f"{r['mil_vs_eager']:.2f}×",
             f"≤ {GOALS['mil_vs_eager']}×", _met(r["mil_vs_eager"], GOALS["mil_vs_eager"]),
             f"{r['latency']['load_avg_1m']}"),
        ]
        if "pss_ratio" in r:  # shared library pages counted once (see _pss)
            rows.insert(2, ("summed peak PSS / direct script (shared pages once)",
                            f"{r['pss_ratio']:.2f}× ({ours['peak_pss_mb']:.0f} / {direct['peak_pss_mb']:.0f} MB)",
                            f"≤ {GOALS['rss_ratio']}×", _met(r["pss_ratio"], GOALS["rss_ratio"]),
                            f"{max(load['cold'] + load['direct'])}"))
        if "jobs_2" in r:  # two worker processes (the default is one process)
            parallel, at = r["jobs_2"], f"{max(load['jobs_2'] + load['direct'])}"
            rows[2:2] = [
                ("cold `--target all --jobs 2` / direct script", f"{r['jobs_2_export_ratio']:.2f}× "
                 f"({parallel['wall_s']:.1f} s / {direct['wall_s']:.1f} s)", f"≤ {GOALS['export_ratio']}×",
                 _met(r["jobs_2_export_ratio"], GOALS["export_ratio"]), at),
                ("summed peak RSS `--jobs 2` / direct script", f"{r['jobs_2_rss_ratio']:.2f}× "
                 f"({parallel['peak_rss_mb']:.0f} / {direct['peak_rss_mb']:.0f} MB)", f"≤ {GOALS['rss_ratio']}×",
                 _met(r["jobs_2_rss_ratio"], GOALS["rss_ratio"]), at)]
        if "warm_same_out" in r:
            same = r["warm_same_out"]
            rows.insert(-1, ("warm re-run (wall), same `--out`",
                             f"{same['wall_s']:.2f} s{'' if same['all_cached'] else ' (not all cached!)'}",
                             f"≤ {GOALS['warm_s']} s", _met(same["wall_s"], GOALS["warm_s"]),
                             f"{max(load['warm_same_out'])}"))
        when = r.get("measured", {}).get("date", "an earlier run")
        lines += [f"| {name} | {f} | {v} | {g} | {ok} | {ld} |" for f, v, g, ok, ld in rows]
        lines[-len(rows)] = lines[-len(rows)].replace(f"| {name} |", f"| {name} ({when}) |", 1)
    lines += ["", "Host latency (`edge-export latency`: 3 warm-up runs, then "
              f"{LATENCY_RUNS} runs of every artifact and PyTorch eager interleaved, 1 thread; "
              "compare the **min**, which other load disturbs least):", "",
              "| model | target | artifact bytes | host runtime | min (ms) | median (ms) | p90 (ms) "
              "| min vs eager | load |", "|---|---|---|---|---|---|---|---|---|"]
    for name, r in results["models"].items():
        sizes = {a["target"]: a["bytes"] for a in r["artifacts"]}
        lat = r["latency"]
        for row in lat["results"]:
            size = f"{sizes[row['target']]:,}" if row["target"] in sizes else "–"
            if "not_run" in row:
                lines.append(f"| {name} | {row['target']} | {size} | {row['runtime']} | not run | | | | |")
                continue
            ratio = f"{row['vs_eager']:.2f}×" if "vs_eager" in row else "–"
            lines.append(f"| {name} | {row['target']} | {size} | {row['runtime']} | {row['min_ms']:.3f} | "
                         f"{row['median_ms']:.3f} | {row['p90_ms']:.3f} | {ratio} | {lat['load_avg_1m']} |")
        lines.append(f"| {name} | fastest | | {lat['fastest']} | | | | | |")
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
    previous = ROOT / "bench" / "results.json"
    try:  # models not re-run keep their figures (each row says when it was measured)
        before = json.loads(previous.read_text())
        for name, old in before["models"].items():
            old.setdefault("measured", {"date": before["machine"]["date"],
                                        "load_avg_1m_at_start": before["machine"]["load_avg_1m_at_start"]})
            results["models"].setdefault(name, old)
    except (OSError, ValueError, KeyError):
        pass
    previous.write_text(json.dumps(results, indent=2) + "\n")
    table = markdown(results)
    (ROOT / "bench" / "RESULTS.md").write_text("# Benchmark results\n\n" + table)
    readme = ROOT / "README.md"
    text = readme.read_text()
    start, end = text.find(README_START), text.find(README_END)
    if 0 <= start < end:  # the README's Performance section shows the latest run
        readme.write_text(text[:start + len(README_START)] + "\n" + table + text[end:])
    print(table)


if __name__ == "__main__":
    main()
