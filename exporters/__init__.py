"""Built-in target plugins: one sub-package per backend (registered in pyproject.toml)."""
