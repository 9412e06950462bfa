"""Quantization: recipes, the shared quantization mechanisms, sensitivity and mixed precision."""
