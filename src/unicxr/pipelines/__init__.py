"""High-level pipelines: generation (and later report writing) from one saved model folder."""
