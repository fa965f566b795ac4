"""Experiment specs shipped with the package (``importlib.resources.files(__name__)``), so
``annealscale demo`` runs from an installed wheel without the repository checkout."""
