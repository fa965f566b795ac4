"""Where and how a sweep runs: local embedded Ray by default; the command-line entry point."""

if __name__ != "annealscale.cluster":  # the folder sits at the repository root: one module identity
    raise ImportError(
        f"import annealscale.cluster, not {__name__} (annealscale installs one namespace)"
    )
