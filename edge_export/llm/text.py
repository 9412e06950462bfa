"""Real English text that ships with CPython (``pydoc_data.topics``), split by topic.

The tiny example LM trains on the training split; every LLM package is scored for
perplexity on the held-out split, which no shipped model has seen.
"""

from __future__ import annotations

HELD_OUT_EVERY = 10  # every 10th topic, sorted by name, is held out


def pydoc_split() -> tuple[list[str], list[str]]:
    """(training documents, held-out documents)."""
    from pydoc_data.topics import topics

    names = sorted(topics)
    train = [topics[n] for i, n in enumerate(names) if i % HELD_OUT_EVERY != HELD_OUT_EVERY - 1]
    held = [topics[n] for i, n in enumerate(names) if i % HELD_OUT_EVERY == HELD_OUT_EVERY - 1]
    return train, held
