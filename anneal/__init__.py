"""One anneal: sources and curation, Arrow data streaming, the model, the Ray Train +
DeepSpeed loop, and evaluation. Knows nothing about Ray Tune."""
