"""A Qwen2-style tiny causal LM with seeded random weights, for ``--model
examples/tiny_lm/qwen2_random.py:build``: exercises the Qwen2 architecture (q/k/v biases,
grouped-query attention, untied output layer) with the tiny LM's tokenizer.

Random weights give near-flat logits, so only lowering fidelity means anything here;
quality claims come from the trained tiny LM in this folder.
"""

from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).resolve().parent


def build():
    import torch
    from tokenizers import Tokenizer
    from transformers import Qwen2Config, Qwen2ForCausalLM

    tokenizer = Tokenizer.from_file(str(HERE / "tokenizer.json"))
    torch.manual_seed(0)
    config = Qwen2Config(vocab_size=tokenizer.get_vocab_size(), hidden_size=64, intermediate_size=128,
                         num_hidden_layers=1, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=256, tie_word_embeddings=False,
                         bos_token_id=tokenizer.token_to_id("<s>"), eos_token_id=tokenizer.token_to_id("</s>"))
    model = Qwen2ForCausalLM(config).eval()
    model.edge_export_tokenizer_json = str(HERE / "tokenizer.json")
    return model
