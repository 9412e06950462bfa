"""``edge-export generate``: run an LLM package's artifact on its host runtime with the
package's own tokenizer, streaming tokens as they come, then prefill and decode tok/s."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from edge_export.errors import UsageError
from edge_export.llm.backend import get_backend
from edge_export.llm.evaluation import prefill
from edge_export.llm.package import read_llm_package


def generate(pkg: Path, prompt: str, max_new_tokens: int, out: TextIO = sys.stdout,
             err: TextIO = sys.stderr) -> dict[str, Any]:
    """Greedy generation (the package's sampling default); returns ids and speeds."""
    from tokenizers import Tokenizer

    manifest = read_llm_package(pkg)
    tokenizer = Tokenizer.from_file(str(pkg / manifest["tokenizer"]["path"]))
    session = get_backend(manifest["target"]).open_session(pkg / manifest["artifact"]["path"])
    ids = np.array(tokenizer.encode(prompt).ids, dtype=np.int64)
    if len(ids) == 0:
        raise UsageError("the prompt encodes to no tokens")
    room = session.max_context - len(ids)
    if room < 1:
        raise UsageError(f"the prompt is {len(ids)} tokens; the package's context is {session.max_context}")
    stop = set(manifest["generation"]["eos_token_ids"])
    out.write(prompt)
    out.flush()
    t0 = time.perf_counter()
    logits = prefill(session, ids)
    prefill_s = time.perf_counter() - t0
    tokens: list[int] = [int(np.argmax(logits))]
    shown = ""
    t1 = time.perf_counter()
    while True:
        text = tokenizer.decode(tokens)
        if not text.endswith("\ufffd"):  # a multi-byte character may still be incomplete
            out.write(text[len(shown):])
            out.flush()
            shown = text
        if tokens[-1] in stop or len(tokens) >= min(max_new_tokens, room):
            break
        logits = session.forward(np.array(tokens[-1:]), len(ids) + len(tokens) - 1)[-1]
        tokens.append(int(np.argmax(logits)))
    decode_s = time.perf_counter() - t1
    out.write("\n")
    stats = {"prompt_tokens": len(ids), "new_tokens": len(tokens),
             "prefill_tok_s": len(ids) / prefill_s,
             "decode_tok_s": (len(tokens) - 1) / decode_s if len(tokens) > 1 and decode_s > 0 else 0.0}
    err.write(f"prefill {stats['prompt_tokens']} tokens at {stats['prefill_tok_s']:.1f} tok/s, "
              f"decode {stats['new_tokens'] - 1} tokens at {stats['decode_tok_s']:.1f} tok/s "
              f"({manifest['runtime']['runtime']})\n")
    return {"ids": tokens, "text": tokenizer.decode(tokens), "runtime": manifest["runtime"]["runtime"], **stats}


def regenerate_goldens(pkg: Path, manifest: dict[str, Any]) -> Any:
    """``edge-export verify`` of an LLM package: every golden prompt greedily decoded again on
    the host runtime must give exactly the continuation the package recorded (what its app's
    self-test checks). The backend's toolchain missing, or its runtime unable to run the artifact
    (RuntimeUnavailable: an op the Linux MIL reference executor lacks), means not-run, as for model
    packages: ``verify`` then exits 4 unless --allow-unverified."""
    import json

    from edge_export.build.exporter import RuntimeUnavailable
    from edge_export.llm.evaluation import greedy
    from edge_export.verify.parity import ParityResult

    runtime = manifest["runtime"]["runtime"]
    try:
        session = get_backend(manifest["target"]).open_session(pkg / manifest["artifact"]["path"])
    except (RuntimeUnavailable, ImportError) as exc:
        return ParityResult("not-run", runtime, reason=f"golden re-run skipped: {exc}")
    for i, entry in enumerate(manifest["golden"]):
        golden = json.loads((pkg / entry["path"]).read_text())
        expected = list(golden["continuation_ids"])
        tokens, _ = greedy(session, np.array(golden["prompt_ids"], dtype=np.int64), len(expected))
        if tokens != expected:
            step = next((s for s, (a, b) in enumerate(zip(tokens, expected)) if a != b), len(tokens))
            return ParityResult("failed", runtime, reason=f"golden prompt {i}: the artifact's greedy "
                                f"continuation differs from the recorded one at step {step}")
    return ParityResult("passed", runtime, reason=f"{len(manifest['golden'])} golden prompts re-generated "
                        "token for token")
