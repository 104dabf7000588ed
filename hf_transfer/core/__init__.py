"""Foundations: errors, logging, registries, settings fields, the cache, seeded randomness, YAML, writing files
and the run folder. They import nothing of the package outside core/."""
