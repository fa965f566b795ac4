"""What every package shares: the project error (`errors`), the spec base model and its
YAML loading (`spec_model`, `spec_yaml`), content hashing (`hashing`) and units (`units`).

Nothing here imports Ray, torch or another annealscale package.
"""
