"""Decoder LLMs as a first-class kind of model: static-KV-cache export, quantization
recipes, generation parity gates, tokenizer-carrying packages and ``generate``.

Kept apart from the fixed-shape vision pipeline on purpose: an LLM is exported with a
cache and prefill/decode entry points, verified by generation rather than one forward
pass, and packaged with its tokenizer. Targets plug in through the
``edge_export.llm_exporters`` entry-point group (see ``backend.py``).
"""
