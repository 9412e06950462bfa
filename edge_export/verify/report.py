"""``report.html``: one self-contained page (plots inline as base64 PNG) that says how
far each artifact is from PyTorch, how big it is, how accurate and how fast on the host.

Errors are recomputed here: each package's golden inputs are run on its target's host
runtime and compared with its golden outputs, so the page shows the artifact that was
shipped, not numbers copied from the build.
"""

from __future__ import annotations

import base64
import html
import io
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge_export.build.exporter import RuntimeUnavailable
from edge_export.release.bundle import is_llm_manifest
from edge_export.verify.integrity import GoldenRun, opened, run_golden
from edge_export.verify.parity import output_metrics

METRICS = ("max_abs", "mean_abs", "cosine", "snr_db", "top1_agreement")


@dataclass
class PackageView:
    label: str  # name target/recipe
    manifest: dict[str, Any]
    errors: dict[str, np.ndarray]  # output -> |artifact - golden|, flattened
    metrics: dict[str, dict[str, float]]
    runtime: str
    latency_ms: float | None
    note: str = ""
    layers: dict[str, Any] | None = None  # parity.json "layers": per-layer sensitivity, auto choice


def _view(folder: Path) -> PackageView:
    manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    label = f"{manifest['name']} {manifest['version']} {manifest['target']}/{manifest['recipe']['name']}"
    if is_llm_manifest(manifest):  # its goldens are prompts: re-generated token for token, as verify does
        from edge_export.llm.generate import regenerate_goldens

        result = regenerate_goldens(folder, manifest)
        return PackageView(label, manifest, {}, {}, result.runtime, None,
                           note=f"golden prompts re-run on the host: {result.status} ({result.reason})")
    try:
        golden = run_golden(folder, manifest)
    except RuntimeUnavailable as exc:
        return PackageView(label, manifest, {}, {}, manifest["parity"]["runtime"], None,
                           note=f"not run on this host: {exc}")
    errors, metrics = {}, {}
    for i, name in enumerate(golden.names):
        ref = [s[i] for s in golden.reference]
        act = [s[i] for s in golden.actual]
        metrics[name] = output_metrics(ref, act)
        errors[name] = np.concatenate([np.abs(np.asarray(a, np.float64).reshape(r.shape) - r).ravel()
                                       for a, r in zip(act, ref, strict=True)])
    return PackageView(label, manifest, errors, metrics, golden.runtime, _latency(golden),
                       layers=_layers(folder))


def _layers(folder: Path) -> dict[str, Any] | None:
    try:
        return json.loads((folder / "parity.json").read_text(encoding="utf-8"))["parity"].get("layers")
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _layers_section(layers: dict[str, Any] | None, shown: int = 10) -> str:
    """keep_float = "auto"'s choice and the most sensitive layers (SNR when only it is quantized)."""
    if not layers or "snr_db_alone" not in layers:
        return ""
    auto = layers.get("keep_float") or {}
    head = ""
    if auto:
        chosen = ", ".join(auto["chosen"]) or "none"
        head = (f"<p>keep_float = auto: {len(auto['chosen'])} of {auto['of_layers']} layers kept "
                f"float ({html.escape(chosen)})</p>")
    rows = "".join(f"<tr><td>{html.escape(name)}</td><td>{snr:.1f}</td></tr>"
                   for name, snr in sorted(layers["snr_db_alone"].items(), key=lambda kv: kv[1])[:shown])
    return (f"{head}<table><tr><th>layer (most sensitive first)</th><th>SNR dB when only it is "
            f"quantized</th></tr>{rows}</table><p>{html.escape(layers.get('method', ''))}</p>")


def _latency(golden: GoldenRun) -> float:
    """The minimum after warm-up (edge_export.verify.latency: the figure other load disturbs least)."""
    from edge_export.verify.latency import limit_threads, single

    limit_threads(1)
    sample = golden.inputs[0]
    return single(lambda: golden.run(sample))["min_ms"]


def _png(fig: Any) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    return f'<img alt="" src="data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}">'


def _histogram(view: PackageView) -> str:
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(view.errors), figsize=(4.5 * len(view.errors), 2.8), squeeze=False)
    for ax, (name, err) in zip(axes[0], view.errors.items(), strict=True):
        positive = err[err > 0]
        if positive.size:
            bins = np.logspace(np.log10(positive.min()), np.log10(positive.max()) + 1e-9, 40)
            ax.hist(positive, bins=bins, color="#4477aa")
            ax.set_xscale("log")
        ax.set_title(f"|error| of {name} ({err.size - positive.size} of {err.size} exact)", fontsize=9)
        ax.set_xlabel("absolute error vs golden output", fontsize=8)
        ax.set_ylabel("values", fontsize=8)
    return _png(fig)


def _bars(title: str, labels: list[str], series: dict[str, list[float]], unit: str) -> str:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(max(5.0, 0.9 * len(labels) * len(series)), 3.2))
    width = 0.8 / len(series)
    x = np.arange(len(labels))
    for i, (name, values) in enumerate(series.items()):
        ax.bar(x + i * width - 0.4 + width / 2, values, width, label=name)
    ax.set_xticks(x, labels, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel(unit)
    ax.set_title(title)
    if len(series) > 1:
        ax.legend(fontsize=8)
    return _png(fig)


def _metric_table(view: PackageView) -> str:
    thresholds = view.manifest["parity"]["thresholds"]
    reported = view.manifest["parity"].get("not_applied", {})  # thresholds the gate skipped
    rows = []
    for output, metrics in view.metrics.items():
        for key in METRICS:
            if key not in metrics:
                continue
            limit = thresholds.get(key)
            ok = "" if limit is None else (
                "pass" if (metrics[key] <= limit if key == "max_abs" else metrics[key] >= limit)
                else "FAIL")
            bound = "" if limit is None else f"{'≤' if key == 'max_abs' else '≥'} {limit:g}"
            if key in reported:
                bound = html.escape(f"{reported[key]['value']:g}: {reported[key]['why']}")  # why says "not gated"
            rows.append(f"<tr><td>{html.escape(output)}</td><td>{key}</td><td>{metrics[key]:.6g}</td>"
                        f"<td>{bound}</td><td class='{ok}'>{ok}</td></tr>")
    return ("<table><tr><th>output</th><th>metric</th><th>value</th><th>threshold</th><th></th></tr>"
            + "".join(rows) + "</table>")


def _package_section(view: PackageView) -> str:
    m = view.manifest
    acc = m.get("accuracy") or {}
    facts = [f"runtime <b>{html.escape(view.runtime)}</b>",
             f"artifact {m['artifact']['bytes']:,} bytes",
             f"parity at build: {html.escape(m['parity']['status'])}"]
    if view.latency_ms is not None:
        facts.append(f"host latency {view.latency_ms:.3f} ms (min of 20 after warm-up, 1 thread)")
    if acc:
        facts.append(f"accuracy float {acc['float']:.2f}% → artifact {acc['artifact']:.2f}%")
    body = (_metric_table(view) + _layers_section(view.layers) + _histogram(view)) if view.errors \
        else f"<p>{html.escape(view.note)}</p>"
    return (f"<section class='package'><h2>{html.escape(view.label)}</h2>"
            f"<p>{' · '.join(facts)}</p>{body}</section>")


def _summary(views: list[PackageView]) -> str:
    labels = [f"{v.manifest['name']} {v.manifest['target']}/{v.manifest['recipe']['name']}" for v in views]
    parts = [_bars("artifact size by target and recipe", labels,
                   {"bytes": [v.manifest["artifact"]["bytes"] for v in views]}, "bytes")]
    accurate = [(lab, v.manifest["accuracy"]) for lab, v in zip(labels, views, strict=True)
                if v.manifest.get("accuracy")]
    if accurate:
        parts.append(_bars("accuracy: float model vs artifact", [lab for lab, _ in accurate],
                           {"float": [a["float"] for _, a in accurate],
                            "artifact": [a["artifact"] for _, a in accurate]}, "% correct"))
    timed = [(lab, v.latency_ms) for lab, v in zip(labels, views, strict=True) if v.latency_ms is not None]
    if timed:
        parts.append(_bars("latency on host runtimes (one thread)", [lab for lab, _ in timed],
                           {"median ms": [t for _, t in timed]}, "ms"))
    return "<section class='summary'><h2>Overview</h2>" + "".join(parts) + "</section>"


STYLE = """body{font-family:system-ui,sans-serif;margin:2em;max-width:1100px}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:2px 8px;font-size:90%}
.pass{color:#070}.FAIL{color:#b00;font-weight:bold}section{margin-bottom:2em}"""


def write_report(packages: list[Path], dest: Path, title: str = "edge-export report") -> Path:
    """Write the page for ``packages`` (directories or zips) to ``dest`` atomically."""
    import matplotlib

    matplotlib.use("Agg")
    views = []
    for package in packages:
        with opened(package) as folder:
            views.append(_view(folder))
    page = (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>"
            + (_summary(views) if views else "<p>No packages.</p>")
            + "".join(_package_section(v) for v in views) + "</body></html>\n")
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.tmp-{os.getpid()}")
    tmp.write_text(page, encoding="utf-8")
    os.replace(tmp, dest)
    return dest
