"""The 1.1 B benchmark model of ``bench/llm.py --large``: a Llama with TinyLlama-1.1B's shape
(22 layers, hidden 2048, 32 heads / 4 KV heads, MLP 5632) and seeded random weights, with the tiny
LM's tokenizer (so its vocabulary is 1,024 rather than 32,000: the transformer blocks, which hold
~0.97 B of TinyLlama's parameters, are full size). Random weights: only size, memory and speed
mean anything here, not perplexity."""

from __future__ import annotations

from pathlib import Path

TOKENIZER = Path(__file__).resolve().parent.parent / "examples" / "tiny_lm" / "tokenizer.json"


def build():
    import torch
    from tokenizers import Tokenizer
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = Tokenizer.from_file(str(TOKENIZER))
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=tokenizer.get_vocab_size(), hidden_size=2048, intermediate_size=5632,
                         num_hidden_layers=22, num_attention_heads=32, num_key_value_heads=4,
                         max_position_embeddings=2048, tie_word_embeddings=False,
                         bos_token_id=tokenizer.token_to_id("<s>"), eos_token_id=tokenizer.token_to_id("</s>"))
    model = LlamaForCausalLM(config).eval()
    model.edge_export_tokenizer_json = str(TOKENIZER)
    return model
