"""Generation parity: the same measurements on PyTorch eager and on the artifact's
runtime, and the recipe's gates over them.

Both sides implement ``Session.forward(ids, start)``, so greedy decoding and
teacher forcing are one function each. The eager side never shares the artifact's cache
code: for small models it recomputes the full sequence every call (no cache at all); for
large ones (more than ``LARGE_MODEL_PARAMETERS``), where recomputing 32 greedy steps of
three prompts took 5.7 minutes of a 1.1 B model's export, it extends transformers' own
``DynamicCache`` instead, and teacher forcing scores fewer held-out tokens.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edge_export.llm.backend import Session
from edge_export.llm.recipe import LLMRecipe

# Fixed prompts for the golden files: short English/Python text any tokenizer encodes.
GOLDEN_PROMPTS = ("The for statement is used to", "A class definition defines", "Exceptions are raised")
EVAL_TOKENS = 2048  # held-out tokens scored for perplexity and top-1 agreement (bounds eval time)
LARGE_MODEL_PARAMETERS = 100_000_000  # above this: cached eager reference, LARGE_EVAL_TOKENS
LARGE_EVAL_TOKENS = 512  # 4 windows of 127: each eager 1.1 B window is ~10 s on 2 cores


def is_large(parameters: int) -> bool:
    return parameters > LARGE_MODEL_PARAMETERS


class EagerSession:
    """PyTorch eager as a Session: the token history plus a forward per call, over the whole
    history (``cached=False``) or over the new tokens with transformers' ``DynamicCache``
    of the history so far (``cached=True``; a call that does not continue the cached
    history recomputes it from the start)."""

    def __init__(self, model: Any, max_seq_len: int, max_context: int, cached: bool = False) -> None:
        self.model, self.max_seq_len, self.max_context, self.cached = model, max_seq_len, max_context, cached
        self._history = np.zeros(0, dtype=np.int64)
        self._cache: Any = None

    def forward(self, ids: np.ndarray, start: int) -> np.ndarray:
        import torch

        self._history = np.concatenate([self._history[:start], ids.astype(np.int64)])
        resume = self.cached and self._cache is not None and start == self._cache.get_seq_length()
        new, offset = (self._history[start:], start) if resume else (self._history, 0)
        with torch.no_grad():
            out = self.model(torch.from_numpy(new)[None], past_key_values=self._cache if resume else None,
                             use_cache=self.cached)
        self._cache = out.past_key_values if self.cached else None
        return out.logits[0, start - offset:].float().numpy()


def prefill(session: Session, ids: np.ndarray, start: int = 0) -> np.ndarray:
    """Logits of the last token after feeding ``ids`` in chunks of at most max_seq_len."""
    logits = None
    for offset in range(0, len(ids), session.max_seq_len):
        logits = session.forward(ids[offset:offset + session.max_seq_len], start + offset)
    return logits[-1]


def greedy(session: Session, prompt: np.ndarray, steps: int, stop: set[int] = frozenset()
           ) -> tuple[list[int], np.ndarray]:
    """(tokens, logits per step [steps, vocab]) of greedy decoding from ``prompt``."""
    steps = min(steps, session.max_context - len(prompt))
    logits = [prefill(session, prompt)]
    tokens = [int(np.argmax(logits[-1]))]
    for i in range(1, steps):
        if tokens[-1] in stop:
            break
        logits.append(session.forward(np.array(tokens[-1:]), len(prompt) + i - 1)[-1])
        tokens.append(int(np.argmax(logits[-1])))
    return tokens, np.stack(logits)


def teacher_forced(session: Session, windows: list[np.ndarray]) -> list[np.ndarray]:
    """Logits for every position of each window, each window prefilled from position 0."""
    return [session.forward(w, 0) for w in windows]


def eval_windows(token_ids: list[int], width: int, tokens: int = EVAL_TOKENS) -> list[np.ndarray]:
    ids = np.asarray(token_ids[:tokens], dtype=np.int64)
    return [ids[i:i + width] for i in range(0, len(ids) - 1, width) if len(ids[i:i + width]) > 1]


def perplexity(logits: list[np.ndarray], windows: list[np.ndarray]) -> float:
    """exp(mean next-token negative log-likelihood) over all windows."""
    nll, count = 0.0, 0
    for lg, w in zip(logits, windows, strict=True):
        lg = lg[:-1].astype(np.float64)
        log_z = np.log(np.exp(lg - lg.max(-1, keepdims=True)).sum(-1)) + lg.max(-1)
        nll += float((log_z - lg[np.arange(len(w) - 1), w[1:]]).sum())
        count += len(w) - 1
    return math.exp(nll / count)


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-30))


@dataclass
class GateReport:
    passed: bool = True
    failures: list[str] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)

    def check(self, ok: bool, failure: str) -> None:
        if not ok:
            self.passed = False
            self.failures.append(failure)


def greedy_gate(report: GateReport, recipe: LLMRecipe, reference: list[tuple[list[int], np.ndarray]],
                artifact: list[tuple[list[int], np.ndarray]]) -> None:
    """fp32: identical greedy tokens and per-step logits cosine at the recipe's floor."""
    worst = 1.0
    for i, ((ref_tokens, ref_logits), (art_tokens, art_logits)) in enumerate(zip(reference, artifact, strict=True)):
        same = next((s for s, (r, a) in enumerate(zip(ref_tokens, art_tokens)) if r != a), None)
        report.check(same is None and len(ref_tokens) == len(art_tokens),
                     f"golden prompt {i}: greedy tokens differ from PyTorch eager at step {same}")
        steps = min(len(ref_logits), len(art_logits))
        worst = min(worst, *(cosine(ref_logits[s], art_logits[s]) for s in range(steps)))
    report.metrics["greedy_worst_logits_cosine"] = worst
    report.check(worst >= recipe.min_logits_cosine,
                 f"logits cosine {worst:.6f} < {recipe.min_logits_cosine} at some greedy step")


def quantized_gates(report: GateReport, recipe: LLMRecipe, windows: list[np.ndarray],
                    float_logits: list[np.ndarray], same_quant_logits: list[np.ndarray],
                    artifact_logits: list[np.ndarray]) -> None:
    """Lowering fidelity (top-1 vs the same-quantization PyTorch model) and quality
    (perplexity on held-out text against float)."""
    agree = [np.mean(np.argmax(a, -1) == np.argmax(q, -1)) for a, q in zip(artifact_logits, same_quant_logits)]
    top1 = float(np.mean(agree))
    ppl = {"float": perplexity(float_logits, windows), "pytorch_quantized": perplexity(same_quant_logits, windows),
           "artifact": perplexity(artifact_logits, windows)}
    ratio = ppl["artifact"] / ppl["float"]
    report.metrics.update(top1_agreement=top1, perplexity=ppl, perplexity_ratio=ratio,
                          eval_tokens=int(sum(len(w) for w in windows)))
    report.check(top1 >= recipe.min_top1_agreement,
                 f"teacher-forced top-1 agreement {top1:.3f} < {recipe.min_top1_agreement} "
                 "against the same-quantization PyTorch model")
    report.check(ratio <= recipe.max_perplexity_ratio,
                 f"perplexity {ppl['artifact']:.2f} is {ratio:.3f}x float {ppl['float']:.2f} "
                 f"(limit {recipe.max_perplexity_ratio}x)")
