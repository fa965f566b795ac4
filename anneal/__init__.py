"""One anneal: sources and curation, Arrow data streaming, the model, the Ray Train +
DeepSpeed loop, and evaluation. Knows nothing about Ray Tune."""

if __name__ != "annealscale.anneal":  # the folder sits at the repository root: one module identity
    raise ImportError(
        f"import annealscale.anneal, not {__name__} (annealscale installs one namespace)"
    )
