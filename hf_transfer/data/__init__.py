"""Data: sources opened as named splits, their columns and labels, the per-example pipeline, streams, and the
task and model a config leaves unset."""
