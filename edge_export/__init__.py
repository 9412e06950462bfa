"""edge-export: one PyTorch model in, verified on-device model packages out."""

__version__ = "0.1.0"
