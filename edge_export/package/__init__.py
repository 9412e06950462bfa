"""Package stage: manifest, golden I/O, hashes, deterministic archives, app preprocessing spec."""
