"""Build stage: the export session, its (target, recipe) jobs, workers, caches and the exporter plugin API."""
