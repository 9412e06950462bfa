"""Train the tiny real LM that ships in this folder: a Llama-architecture causal LM of
about a million parameters, on the English text that ships with CPython
(``pydoc_data.topics``), for a few CPU minutes.

Why it exists: random weights give flat logits, on which token agreement and
perplexity measure noise. A real (if tiny) LM makes quantization losses visible
and lets generation parity compare meaningful continuations. Everything is local:
the text comes with Python, the tokenizer is trained here, nothing is downloaded.

    nice -n 10 .venv/bin/python examples/tiny_lm/train.py --minutes 4 --threads 2

writes tokenizer.json, config.json, generation_config.json and model.safetensors
beside this file (a transformers checkpoint directory: ``--model examples/tiny_lm``).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SPECIAL = ["<unk>", "<s>", "</s>"]
def train_tokenizer(texts: list[str], vocab_size: int):
    """Byte-level BPE: every input string is encodable and decodes back exactly."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer)
    bos = tok.token_to_id("<s>")
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", bos)])
    return tok


def encode(tok, docs: list[str]) -> list[int]:
    """One stream: each document starts with <s> and ends with </s>."""
    eos = tok.token_to_id("</s>")
    ids: list[int] = []
    for doc in docs:
        ids += tok.encode(doc).ids + [eos]
    return ids


def model_config(vocab_size: int, bos: int, eos: int):
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=vocab_size, hidden_size=128, intermediate_size=384, num_hidden_layers=4,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
        rms_norm_eps=1e-5, tie_word_embeddings=True, bos_token_id=bos, eos_token_id=eos,
        rope_theta=10000.0)


def perplexity(model, ids, seq: int) -> float:
    """Token-level perplexity over non-overlapping windows of ``seq`` tokens."""
    import torch

    total, count = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(ids) - seq, seq):
            window = torch.tensor(ids[start:start + seq + 1])[None]
            out = model(window[:, :-1], labels=window[:, :-1])
            # transformers shifts labels itself: seq-1 predicted tokens per window
            total += out.loss.item() * (seq - 1)
            count += seq - 1
    return math.exp(total / count)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=4.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--vocab-size", type=int, default=1024)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--out", type=Path, default=HERE)
    args = parser.parse_args()

    import torch
    from transformers import GenerationConfig, LlamaForCausalLM

    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    from edge_export.llm.text import pydoc_split  # the split every LLM package is scored on

    train_docs, held_docs = pydoc_split()
    tok = train_tokenizer(train_docs, args.vocab_size)
    bos, eos = tok.token_to_id("<s>"), tok.token_to_id("</s>")
    train_ids, held_ids = encode(tok, train_docs), encode(tok, held_docs)
    print(f"tokens: train {len(train_ids):,}, held-out {len(held_ids):,}")

    model = LlamaForCausalLM(model_config(tok.get_vocab_size(), bos, eos))
    print(f"parameters: {sum(p.numel() for p in model.parameters()):,}")
    data = torch.tensor(train_ids)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01, betas=(0.9, 0.95))
    budget = args.minutes * 60
    start, step = time.monotonic(), 0
    while (elapsed := time.monotonic() - start) < budget:
        # cosine decay over the time budget, after a short warm-up
        frac = elapsed / budget
        lr = args.lr * min(1.0, (step + 1) / 50) * 0.5 * (1 + math.cos(math.pi * frac))
        for group in opt.param_groups:
            group["lr"] = lr
        offsets = torch.randint(0, len(data) - args.seq - 1, (args.batch,))
        batch = torch.stack([data[o:o + args.seq] for o in offsets])
        loss = model(batch, labels=batch).loss
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step % 50 == 0:
            print(f"step {step} {elapsed:.0f}s loss {loss.item():.3f} lr {lr:.2e}", flush=True)
        step += 1

    model.eval()
    held_ppl = perplexity(model, held_ids, args.seq)
    print(f"steps {step}; held-out perplexity {held_ppl:.2f}")
    args.out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(args.out, safe_serialization=True)
    GenerationConfig(bos_token_id=bos, eos_token_id=eos, do_sample=False,
                     max_new_tokens=64).save_pretrained(args.out)
    tok.save(str(args.out / "tokenizer.json"))
    (args.out / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<s>", "eos_token": "</s>",
        "unk_token": "<unk>", "model_max_length": 512}, indent=2) + "\n")
    (args.out / "training.json").write_text(json.dumps({
        "steps": step, "minutes": args.minutes, "threads": args.threads, "seq": args.seq,
        "batch": args.batch, "held_out_perplexity": round(held_ppl, 3),
        "held_out_tokens": len(held_ids), "train_tokens": len(train_ids)}, indent=2) + "\n")


if __name__ == "__main__":
    main()
