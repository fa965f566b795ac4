"""Reading a spec's YAML: numbers and booleans as YAML 1.2 reads them, and every key a
name given once.

PyYAML follows YAML 1.1, where ``1e-3`` (no dot) is a string, ``no`` is false and a
repeated key silently keeps the last value; editors checking a spec against ``annealscale
schema`` follow YAML 1.2, where ``1e-3`` is a number and ``no`` a string. Reading as 1.2
here keeps the two in agreement; a repeated key, which hides one of two intended values,
and a key that is not a name (``5:``) are refused with their line.
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


class _BadKey(Exception):
    def __init__(self, problem: str, line: int):
        self.problem, self.line = problem, line


class _SpecLoader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 floats and no repeated keys."""

    def construct_mapping(self, node, deep=False):
        seen: set = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            line = key_node.start_mark.line + 1
            if not isinstance(key, str):
                raise _BadKey(f"key {key!r} is not a name; quote it or fix the line", line)
            if key in seen:
                raise _BadKey(f"key '{key}' appears twice in one mapping; keep one", line)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


_YAML_11_ONLY = ("tag:yaml.org,2002:float", "tag:yaml.org,2002:bool")
_SpecLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag not in _YAML_11_ONLY]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_SpecLoader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT_12, list("-+0123456789."))
# YAML 1.2 booleans are true/false only; 1.1 also took yes/no/on/off (`name: no` -> False).
_SpecLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


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
    except _BadKey as bad:
        raise SpecError(str(path), f"line {bad.line}: {bad.problem}") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark else ""
        raise SpecError(str(path), f"not valid YAML{where}") from None
