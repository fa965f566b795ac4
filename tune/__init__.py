"""The sweep: the spec, the cells, the Ray Tune trial, the results store."""

if __name__ != "annealscale.tune":  # the folder sits at the repository root: one module identity
    raise ImportError(
        f"import annealscale.tune, not {__name__} (annealscale installs one namespace)"
    )
