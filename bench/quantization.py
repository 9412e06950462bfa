"""``make bench-quant``: the evidence for the shipped static-int8 recipes.

Runs edge-export (``--json --no-cache``) on a depthwise-heavy CNN (``examples/dwnet.py``)
and the digits CNN, per target: ``fp32`` (the size reference), the shipped ``int8-static``
with its own gates, and user recipe files that change one parameter of it (the observer,
or which layers stay float). Variants get open gates so a bad one is still measured; the
table also says whether each would pass the shipped recipe's gates. Writes
bench/quantization.json and bench/QUANTIZATION.md.

Usage: python bench/quantization.py [--models dwnet,digits] [--targets android,ios,tflite] [--no-variants]
[--render-only]
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
import tomllib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
MODELS = {"dwnet": "examples/dwnet.py:build", "digits": "examples/digits.py:build",
          "efficientnet-lite0": "examples/efficientnet_lite0.py:build", "minilm": "bench/minilm.py:build"}
DIGITS_DATA = {"--calibration-data": "examples/data/digits_calib.npz",
               "--validation-data": "examples/data/digits_val.npz",
               "--eval-data": "examples/data/digits_eval.npz"}
# EfficientNet-Lite0 (real ImageNet weights): crops of real photos, written at run time by
# examples/efficientnet_lite0.py; calibration and validation come from different photos.
PHOTO_CROPS = {"calibration": 256, "evaluation": 64}
SHIPPED = "int8-static"
# Per target: variant name → the [quantize] keys changed in a copy of the shipped recipe.
ALL_QUANTIZED = {"all-quantized": {"keep_float": []}}  # what keep_float = "auto" buys
VARIANTS: dict[str, dict[str, dict[str, Any]]] = {
    "android": {**ALL_QUANTIZED, "nearest-rounding": {"weight_rounding": "nearest"},
                "no-bias-correction": {"bias_correction": False}},
    "ios": {**ALL_QUANTIZED, "nearest-rounding": {"weight_rounding": "nearest"},
            "symmetric-activations": {"activation_scheme": "symmetric"}},
    "tflite": {**ALL_QUANTIZED, "nearest-rounding": {"weight_rounding": "nearest"},
               "moving-average": {"observer": "moving-average"}},
}
OPEN_GATES = {"parity": {"cosine": -1.0, "snr_db": -1000.0, "top1_agreement": 0.0},
              "accuracy": {"max_drop": 100.0}}
DEFAULT_MAX_DROP = 1.0  # the 8-bit default when a recipe sets no [accuracy] max_drop


def toml_value(value: Any) -> str:
    return json.dumps(value)  # strings, numbers and lists of strings are the same in TOML


def set_key(text: str, section: str, key: str, value: Any) -> str:
    """Set ``key`` in ``[section]`` of a TOML text (replacing its line, else appending it
    to the section, else appending the section), keeping the file's comments."""
    line = f"{key} = {toml_value(value)}"
    header = re.search(rf"^\[{re.escape(section)}\]\s*$", text, re.M)
    if header is None:
        return text.rstrip("\n") + f"\n\n[{section}]\n{line}\n"
    end = re.search(r"^\[", text[header.end():], re.M)
    stop = header.end() + end.start() if end else len(text)
    body = text[header.end():stop]
    if re.search(rf"^{re.escape(key)}\s*=.*$", body, re.M):
        body = re.sub(rf"^{re.escape(key)}\s*=.*$", line, body, count=1, flags=re.M)
    else:
        body = body.rstrip("\n") + f"\n{line}\n" + ("\n" if end else "")
    return text[:header.end()] + body + text[stop:]


def variant_recipe(target: str, name: str, changes: dict[str, Any], folder: Path) -> Path:
    """A copy of the shipped recipe with ``changes`` in [quantize], its own name and open gates."""
    text = (ROOT / "recipes" / target / f"{SHIPPED}.toml").read_text()
    text = re.sub(r'^name = ".*"$', f'name = "{SHIPPED}-{name}"', text, count=1, flags=re.M)
    for key, value in {"keep_float": [], **changes}.items():  # one change: auto off
        text = set_key(text, "quantize", key, value)
    for section, values in OPEN_GATES.items():
        for key, value in values.items():
            text = set_key(text, section, key, value)
    parsed = tomllib.loads(text)
    assert parsed["name"] == f"{SHIPPED}-{name}"
    assert all(parsed["quantize"][k] == v for k, v in changes.items()), text
    path = folder / f"{target}-{name}.toml"
    path.write_text(text)
    return path


def shipped_gates(target: str) -> dict[str, Any]:
    recipe = tomllib.loads((ROOT / "recipes" / target / f"{SHIPPED}.toml").read_text())
    return {"parity": recipe.get("parity", {}),
            "max_drop": recipe.get("accuracy", {}).get("max_drop", DEFAULT_MAX_DROP)}


def passes(row: dict[str, Any], gates: dict[str, Any]) -> bool | None:
    """Would this row pass the shipped recipe's quality gates (parity vs float + accuracy)?"""
    if row.get("snr_db") is None:
        return None
    parity = gates["parity"]
    accuracy_ok = row.get("drop") is None or row["drop"] <= gates["max_drop"]  # None: no labelled data
    return (row["snr_db"] >= parity.get("snr_db", -1e9) and row["cosine"] >= parity.get("cosine", -1)
            and row["top1_agreement"] >= parity.get("top1_agreement", 0) and accuracy_ok)


def model_data(model: str, workdir: Path) -> list[str]:
    """edge-export's data arguments for ``model`` (photo crops are generated once per run)."""
    if model != "efficientnet-lite0":
        return [a for kv in DIGITS_DATA.items() for a in kv]
    calibration, validation = workdir / "photo_calib.npz", workdir / "photo_val.npz"
    if not validation.exists():
        sys.path.insert(0, str(ROOT / "examples"))
        from efficientnet_lite0 import write_npz

        write_npz(str(calibration), "calibration", PHOTO_CROPS["calibration"])
        write_npz(str(validation), "evaluation", PHOTO_CROPS["evaluation"])
    return ["--calibration-data", str(calibration), "--validation-data", str(validation),
            "--parity-samples", str(PHOTO_CROPS["evaluation"])]


def run_target(model: str, target: str, workdir: Path, with_variants: bool = True) -> list[dict[str, Any]]:
    """One edge-export run (export once, every recipe of this target); one row per recipe."""
    variants = VARIANTS.get(target, {}) if with_variants else {}
    files = {f"{SHIPPED}-{n}": variant_recipe(target, n, c, workdir) for n, c in variants.items()}
    recipes = ["fp32", SHIPPED, *map(str, files.values())]
    cmd = [sys.executable, "-m", "edge_export", "--model", MODELS[model], "--target", target,
           *[a for r in recipes for a in ("--recipe", r)], *model_data(model, workdir),
           "--out", str(workdir / f"out-{model}-{target}"), "--no-cache", "--json", "--jobs", "1"]
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    wall = round(time.perf_counter() - start, 1)
    try:
        report = json.loads(proc.stdout)
    except json.JSONDecodeError:
        report = {"packages": [], "error": {"code": proc.returncode, "message": proc.stderr.strip()[-500:]}}
    by_recipe = {p["recipe"]: p for p in report.get("packages", [])}
    rows = []
    for recipe in ["fp32", SHIPPED, *files]:
        changes = variants.get(recipe.removeprefix(f"{SHIPPED}-"), {}) if recipe in files else {}
        row = {"model": model, "target": target, "recipe": recipe, "changes": changes,
               "gates": "open" if recipe in files else "shipped", "run_wall_s": wall}
        package = by_recipe.get(recipe)
        if package is None:
            row.update(status="error", error=report.get("error", {}).get("message", "no result"))
        else:
            row.update(measure(package))
            row["kept_float"] = kept_float(package)
            row["selection"] = selection(package)
        if recipe != "fp32":
            row["passes_shipped_gates"] = passes(row, shipped_gates(target))
            text = Path(files[recipe] if recipe in files else ROOT / "recipes" / target / f"{SHIPPED}.toml")
            row["calibration_samples"] = tomllib.loads(text.read_text()).get("calibration", {}).get("samples")
        rows.append(row)
    fp32_bytes = rows[0].get("bytes")
    for row in rows:
        if row.get("bytes") and fp32_bytes:
            row["bytes_ratio_to_fp32"] = round(row["bytes"] / fp32_bytes, 3)
    return rows


def measure(package: dict[str, Any]) -> dict[str, Any]:
    (metrics,) = package["parity"]["outputs"].values() or ({},)
    accuracy = package.get("accuracy") or {}
    row = {"status": package["status"], "runtime": package["parity"]["runtime"],
           "snr_db": metrics.get("snr_db"), "cosine": metrics.get("cosine"),
           "top1_agreement": metrics.get("top1_agreement"),
           "float_accuracy": accuracy.get("float"), "artifact_accuracy": accuracy.get("artifact"),
           "drop": accuracy.get("drop"), "eval_samples": accuracy.get("samples"),
           "bytes": package.get("bytes"),
           "latency_ms": (package.get("latency") or {}).get("median_ms"),
           "stage_s": round(sum((package.get("timings") or {}).values()), 1)}
    if package.get("error") or package["status"] == "failed":
        row["error"] = (package.get("error") or {}).get("message") or package["parity"]["reason"]
    if package.get("path"):
        manifest = json.loads((Path(package["path"]) / "manifest.json").read_text())
        row["tools"] = manifest.get("tools")
        row["parity_samples"] = manifest.get("golden", {}).get("samples")
    return row


# all-MiniLM-L6-v2 (real weights, bench/minilm.py): the weight/dynamic recipes each target
# offers, with the issue-12 goals on the embedding's cosine; "-auto" rows are copies with
# keep_float = "auto" and the goal as their cosine gate (only where the scheme honours it).
MINILM_SENTENCES = {"calibration": 64, "parity": 32}
MINILM_RECIPES = {"android": ["int8-dynamic", "8da4w"], "ios": ["int8-weight", "int4-weight", "fp16"],
                  "tflite": ["int8-dynamic", "int8-weight", "int4-weight", "8da4w"]}
MINILM_AUTO = {"android": ["int8-dynamic", "8da4w"], "ios": ["int4-weight"], "tflite": ["int4-weight", "8da4w"]}
MINILM_GOAL = {8: 0.995, 4: 0.98}  # cosine of the embedding vs float, by weight bits


def minilm_auto_recipe(target: str, name: str, folder: Path) -> tuple[Path, float]:
    """A copy of ``name`` with keep_float = "auto" and the goal as its cosine gate."""
    text = (ROOT / "recipes" / target / f"{name}.toml").read_text()
    goal = MINILM_GOAL[tomllib.loads(text)["quantize"]["bits"]]
    text = re.sub(r'^name = ".*"$', f'name = "{name}-auto"', text, count=1, flags=re.M)
    text = set_key(set_key(text, "quantize", "keep_float", "auto"), "parity", "cosine", goal)
    path = folder / f"minilm-{target}-{name}-auto.toml"
    path.write_text(text)
    return path, goal


def run_minilm(model: str, target: str, workdir: Path, with_variants: bool = True) -> list[dict[str, Any]]:
    """MiniLM on real sentences: fp32, the shipped weight/dynamic recipes and (with variants)
    their keep_float-auto copies."""
    calibration, validation = workdir / "minilm_calib.npz", workdir / "minilm_val.npz"
    if not validation.exists():
        sys.path.insert(0, str(ROOT / "bench"))
        from minilm import write_npz

        write_npz(str(calibration), "calibration", MINILM_SENTENCES["calibration"])
        write_npz(str(validation), "parity", MINILM_SENTENCES["parity"])
    autos = {f"{n}-auto": minilm_auto_recipe(target, n, workdir)
             for n in (MINILM_AUTO.get(target, []) if with_variants else [])}
    recipes = ["fp32", *MINILM_RECIPES[target], *(str(p) for p, _ in autos.values())]
    cmd = [sys.executable, "-m", "edge_export", "--model", MODELS[model], "--target", target,
           *[a for r in recipes for a in ("--recipe", r)], "--calibration-data", str(calibration),
           "--validation-data", str(validation), "--parity-samples", str(MINILM_SENTENCES["parity"]),
           "--out", str(workdir / f"out-{model}-{target}"), "--no-cache", "--json", "--jobs", "1"]
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    wall = round(time.perf_counter() - start, 1)
    try:
        report = json.loads(proc.stdout)
    except json.JSONDecodeError:
        report = {"packages": [], "error": {"code": proc.returncode, "message": proc.stderr.strip()[-500:]}}
    by_recipe = {p["recipe"]: p for p in report.get("packages", [])}
    rows = []
    for recipe in ["fp32", *MINILM_RECIPES[target], *autos]:
        auto = recipe in autos
        text = (autos[recipe][0] if auto else ROOT / "recipes" / target / f"{recipe}.toml").read_text()
        bits = tomllib.loads(text).get("quantize", {}).get("bits")
        row = {"model": model, "target": target, "recipe": recipe, "gates": "goal" if auto else "shipped",
               "changes": {"keep_float": "auto", "parity.cosine": autos[recipe][1]} if auto else {},
               "run_wall_s": wall, "goal_cosine": MINILM_GOAL.get(bits),
               "calibration_samples": MINILM_SENTENCES["calibration"],
               "parity_sentences": MINILM_SENTENCES["parity"]}
        package = by_recipe.get(recipe)
        if package is None:
            row.update(status="error", error=report.get("error", {}).get("message", "no result"))
        else:
            row.update(measure(package))
            row["kept_float"] = kept_float(package)
        if row.get("cosine") is not None and row["goal_cosine"] is not None:
            row["goal_met"] = row["cosine"] >= row["goal_cosine"]
        rows.append(row)
    fp32_bytes = rows[0].get("bytes")
    for row in rows:
        if row.get("bytes") and fp32_bytes:
            row["bytes_ratio_to_fp32"] = round(row["bytes"] / fp32_bytes, 3)
    return rows


def auto_record(package: dict[str, Any]) -> dict[str, Any]:
    """parity.json's keep_float record ({} when auto was off)."""
    path = Path(package.get("path") or "") / "parity.json"
    if not package.get("path") or not path.exists():
        return {}
    layers = json.loads(path.read_text())["parity"].get("layers") or {}
    return layers.get("keep_float") or {}


def kept_float(package: dict[str, Any]) -> list[str] | None:
    """The layers keep_float = "auto" chose, None when auto was off."""
    return auto_record(package).get("chosen")


def selection(package: dict[str, Any]) -> dict[str, Any] | None:
    """What auto chose on (its selection split, in sample for the choice) with the chosen
    artifact's SNR/cosine/top-1 there and whether the goal was met there and on the parity
    samples (the row's own figures)."""
    record = auto_record(package)
    if not record.get("selection"):
        return None
    return {**record["selection"], "goal_met": record.get("goal_met"),
            "reported_goal_met": record.get("reported_goal_met")}


RUNNERS = {"minilm": run_minilm}


def machine() -> dict[str, Any]:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(),
            "platform": platform.platform(), "load_average_at_start": round(os.getloadavg()[0], 2),
            "date_utc": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")}


def fmt(value: Any, spec: str = "") -> str:
    return "–" if value is None else format(value, spec)


def markdown(result: dict[str, Any]) -> str:
    m = result["machine"]
    lines = ["# Static int8 recipes: measured", "",
             f"Machine: {m['cpu']}, {m['cores']} cores, Python {m['python']}, {m['platform']}; "
             f"load average {m['load_average_at_start']} at start; {m['date_utc']}. "
             f"Tools: {json.dumps(result['tools'])}.", "",
             "Produced by `make bench-quant` (`bench/quantization.py`). Data: calibration "
             "`digits_calib.npz` (the recipe's sample count), SNR/cosine/top-1 agreement of the logits vs "
             f"float PyTorch on {_parity_count(result, 'digits')} samples (the example input and the first of "
             "`digits_val.npz`'s held-out images, as many as `--parity-samples` takes), accuracy on "
             "`digits_eval.npz` (450 held-out images). EfficientNet-Lite0 (real ImageNet weights): calibration on "
             f"{PHOTO_CROPS['calibration']} crops of 6 photos, parity on {PHOTO_CROPS['evaluation']} crops of 4 "
             "*other* photos + the example (examples/efficientnet_lite0.py; no labels, so no accuracy column); "
             "`calib.` is the number of calibration samples the recipe asks for. `int8-static` is the shipped "
             "recipe with its own "
             "gates (`keep_float = \"auto\"` aiming at its [goal]: SNR >= 25 dB, top-1 >= 0.95); "
             "the other quantized rows are copies of it with one change and open gates "
             "(`shipped gates?` applies the shipped recipe's parity thresholds and accuracy drop to them) and "
             "quantize every layer (`keep_float = []`) unless the change says otherwise; `all-quantized` is "
             "the shipped recipe without auto.", "",
             "| model | target | recipe | change | status | shipped gates? | SNR dB | cosine | top-1 agr. "
             "| float acc % | artifact acc % | drop (pts) | bytes | × fp32 | host ms | calib. | measured (load) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in [r for r in result["rows"] if r["model"] not in RUNNERS]:
        change = ", ".join(f"{k} = {json.dumps(v)}" for k, v in r["changes"].items()) or "–"
        if r.get("kept_float") is not None:
            change += f"; kept float: {', '.join(r['kept_float']) or 'none'}"
        chosen_on = r.get("selection")
        if chosen_on:
            change += (f"; chosen on {chosen_on['samples']} {chosen_on['from']} samples "
                       f"({fmt(chosen_on.get('snr_db'), '.1f')} dB, "
                       f"top-1 {fmt(chosen_on.get('top1_agreement'), '.3f')} there"
                       + ("" if chosen_on.get("goal_met") is None else
                          f"; goal met there: {'yes' if chosen_on['goal_met'] else 'no'}") + ")")
        gate = {True: "yes", False: "**no**", None: "–"}[r.get("passes_shipped_gates")]
        status = r["status"] if not r.get("error") else f"{r['status']}: {r['error'][:80]}"
        lines.append(f"| {r['model']} | {r['target']} | {r['recipe']} | {change} | {status} | {gate} "
                     f"| {fmt(r.get('snr_db'), '.1f')} | {fmt(r.get('cosine'), '.5f')} "
                     f"| {fmt(r.get('top1_agreement'), '.3f')} | {fmt(r.get('float_accuracy'), '.2f')} "
                     f"| {fmt(r.get('artifact_accuracy'), '.2f')} | {fmt(r.get('drop'), '.2f')} "
                     f"| {fmt(r.get('bytes'), ',')} | {fmt(r.get('bytes_ratio_to_fp32'), '.3f')} "
                     f"| {fmt(r.get('latency_ms'), '.2f')} | {fmt(r.get('calibration_samples'))} "
                     f"| {r.get('run_date', m['date_utc'])} ({fmt(r.get('load_average'))}) |")
    lines += minilm_markdown([r for r in result["rows"] if r["model"] == "minilm"])
    return "\n".join([*lines, ""])


def _parity_count(result: dict[str, Any], model: str) -> str:
    """How many parity samples ``model``'s rows were measured on, read from the rows (the golden
    samples each package carries), so the text says what was run."""
    counts = sorted({len(r["parity_samples"]) for r in result["rows"]
                     if r["model"] == model and r.get("parity_samples")})
    return " or ".join(map(str, counts)) or "an unrecorded number of"


def minilm_markdown(rows: list[dict[str, Any]]) -> list[str]:
    if not rows:
        return []
    out = ["", "## all-MiniLM-L6-v2 (real weights), sentence embedding on real English", "",
           f"Calibration: {MINILM_SENTENCES['calibration']} sentences, parity: "
           f"{MINILM_SENTENCES['parity']} *other* sentences (+ the example) from CPython's "
           "`pydoc_data.topics` (even / odd topics; bench/minilm.py), 32 tokens, the output is the "
           "mean-pooled L2-normalised embedding. Goal (issue 12): cosine >= 0.995 for 8-bit recipes, "
           ">= 0.98 for 4-bit. `-auto` rows: the shipped recipe with `keep_float = \"auto\"` and the goal "
           "as its cosine gate.", "",
           "| target | recipe | change | status | goal cosine | met? | cosine | SNR dB | bytes | × fp32 "
           "| host ms | kept float |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        change = ", ".join(f"{k} = {json.dumps(v)}" for k, v in r["changes"].items()) or "–"
        met = {True: "yes", False: "**no**", None: "–"}[r.get("goal_met")]
        status = r["status"] if not r.get("error") else f"{r['status']}: {r['error'][:90]}"
        kept = r.get("kept_float")
        kept_s = "–" if kept is None else (f"{len(kept)}: " + ", ".join(kept[:4]) + (" …" if len(kept) > 4 else "")
                                           if kept else "none")
        out.append(f"| {r['target']} | {r['recipe']} | {change} | {status} | {fmt(r.get('goal_cosine'))} | {met} "
                   f"| {fmt(r.get('cosine'), '.5f')} | {fmt(r.get('snr_db'), '.1f')} | {fmt(r.get('bytes'), ',')} "
                   f"| {fmt(r.get('bytes_ratio_to_fp32'), '.3f')} | {fmt(r.get('latency_ms'), '.2f')} | {kept_s} |")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--targets", default="android,ios,tflite")
    parser.add_argument("--no-variants", action="store_true",
                        help="fp32 and the shipped int8-static only (EfficientNet-Lite0: ~15 min a target, 2 cores)")
    parser.add_argument("--render-only", action="store_true",
                        help="rewrite QUANTIZATION.md from quantization.json (after editing its conclusions)")
    args = parser.parse_args()
    if args.render_only:
        (ROOT / "bench" / "QUANTIZATION.md").write_text(
            markdown(json.loads((ROOT / "bench" / "quantization.json").read_text())))
        return
    result: dict[str, Any] = {"machine": machine(), "rows": []}
    with tempfile.TemporaryDirectory(prefix="bench-quant-") as tmp:
        for model in args.models.split(","):
            for target in args.targets.split(","):
                print(f"{model} / {target} ...", file=sys.stderr, flush=True)
                runner = RUNNERS.get(model, run_target)
                rows = [{**r, "run_date": result["machine"]["date_utc"], "load_average": round(os.getloadavg()[0], 2)}
                        for r in runner(model, target, Path(tmp), not args.no_variants)]
                result["rows"] += rows
                for r in rows:
                    print(f"  {r['recipe']}: {r['status']} snr={r.get('snr_db')} drop={r.get('drop')} "
                          f"bytes={r.get('bytes')} {r.get('error', '')[:200]}", file=sys.stderr, flush=True)
    result["tools"] = {}
    for r in result["rows"]:
        result["tools"].update(r.pop("tools", None) or {})
    previous = ROOT / "bench" / "quantization.json"
    if previous.exists():
        old = json.loads(previous.read_text())
        # A partial run (--models/--targets/--no-variants) replaces only its own rows; the others
        # (variants not re-run included) stay, dated.
        ran = {(r["model"], r["target"], r["recipe"]) for r in result["rows"]}
        kept = [{**r, "run_date": r.get("run_date", old["machine"]["date_utc"])} for r in old["rows"]
                if (r["model"], r["target"], r["recipe"]) not in ran]
        result["rows"] = kept + result["rows"]
        result["tools"] = {**old.get("tools", {}), **result["tools"]}
    previous.write_text(json.dumps(result, indent=2) + "\n")
    (ROOT / "bench" / "QUANTIZATION.md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
