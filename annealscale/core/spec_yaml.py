"""Reading a spec's YAML: a repeated key is an error, and numbers read as YAML 1.2 reads them.

PyYAML follows YAML 1.1, where ``1e-3`` (no dot) is a string and a repeated key silently
keeps the last value; editors checking a spec against ``annealscale schema`` follow YAML
1.2, where ``1e-3`` is a number. Reading as 1.2 here keeps the two in agreement, and a
repeated key, which hides one of two intended values, is refused with its line.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from annealscale.core.errors import SpecError

# YAML 1.2 core schema floats, which PyYAML's 1.1 resolver misses (``1e-3``, ``2E6``).
_FLOAT_12 = re.compile(
    r"^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?$|^[-+]?\.(inf|Inf|INF)$|^\.(nan|NaN|NAN)$"
)


class _DuplicateKey(Exception):
    def __init__(self, key: Any, line: int):
        self.key, self.line = key, line


class _SpecLoader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 floats and no repeated keys."""

    def construct_mapping(self, node, deep=False):
        seen: set = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise _DuplicateKey(key, key_node.start_mark.line + 1)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


_SpecLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:float"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_SpecLoader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT_12, list("-+0123456789."))


def load_yaml(path: str | Path) -> Any:
    """The parsed YAML at ``path``; any problem is one `SpecError` naming the file."""
    path = Path(path)
    if not path.is_file():
        problem = (
            "is a directory; give the spec's YAML file" if path.is_dir() else "spec file not found"
        )
        raise SpecError(str(path), problem)
    try:
        return yaml.load(path.read_text(), Loader=_SpecLoader)  # noqa: S506 - a SafeLoader
    except _DuplicateKey as dup:
        raise SpecError(
            str(path), f"key '{dup.key}' appears twice in one mapping (line {dup.line}); keep one"
        ) from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark else ""
        raise SpecError(str(path), f"not valid YAML{where}") from None
