"""The spec's paths checked before any compute: that each local file or directory exists
and is of the kind its field asks for, with the error naming the spec field.

``annealscale validate`` and every sweep run this first, so a typo in a path is reported
at once (``replay.path: data/replay.parquet: no such file or directory``) rather than
by a worker minutes later naming only the file. Paths this cannot check without building
or fetching something (``demo:`` assets, hub ids, ``s3://`` URIs) are left to the sweep.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from annealscale.anneal.demo_corpus import SPLITS
from annealscale.anneal.documents import HUB_PREFIX, is_uri, locate
from annealscale.core.errors import AnnealscaleError, SpecError
from annealscale.core.hashing import to_plain
from annealscale.tune.spec import ExperimentSpec

DEMO_PREFIX = "demo:"
DEMO_MODELS = ("base",)


def check_paths(spec: ExperimentSpec) -> None:
    """Raise `SpecError` naming the first spec field whose local path is missing or wrong."""
    for field, path, kind in spec_paths(spec):
        if kind == "model":
            _check_model(field, path)
        elif kind == "file":
            _check_file(field, path)
        else:
            _check_data(field, path)
    check_storage_path(spec.storage_path)


def spec_paths(spec: ExperimentSpec) -> Iterator[tuple[str, str, str]]:
    """``(field, path, kind)`` for every path in ``spec``; kind is ``model`` (a checkpoint
    directory or hub id), ``data`` (documents) or ``file`` (one file read whole)."""
    yield "base_model.path", spec.base_model.path, "model"
    yield "replay.path", spec.replay.path, "data"
    yield "eval.domain.path", spec.eval.domain.path, "data"
    yield "eval.general.path", spec.eval.general.path, "data"
    for i, task in enumerate(spec.eval.tasks):
        yield f"eval.tasks[{i}].path", task.path, "file"
    if spec.train.deepspeed_config:
        yield "train.deepspeed_config", spec.train.deepspeed_config, "file"
    for i, source in enumerate(spec.sources):
        for name, value in sorted(to_plain(source.params).items()):
            if isinstance(value, str) and (name == "path" or name.endswith("_path")):
                kind = "model" if name == "model_path" else "data"
                yield f"sources[{i}].params.{name}", value, kind


def check_storage_path(storage_path: str) -> None:
    """``storage_path`` must be (or be creatable as) a directory; URIs are not checked."""
    if is_uri(storage_path):
        return
    path = Path(storage_path).expanduser()
    for place in (path, *path.parents):
        if place.exists():
            if not place.is_dir():
                where = "" if place == path else f" ({place} is a file)"
                raise SpecError(
                    "storage_path",
                    f"{storage_path} is not a directory{where}; give a directory (it is "
                    "created if missing) or an s3:// or gs:// URI",
                )
            return


def _skipped(path: str) -> bool:
    return path.startswith((DEMO_PREFIX, HUB_PREFIX)) or is_uri(path)


def _check_demo(field: str, path: str, known: tuple[str, ...]) -> None:
    name = path[len(DEMO_PREFIX) :]
    if path.startswith(DEMO_PREFIX) and name not in known:
        raise SpecError(field, f"{path}: unknown demo asset; known: {', '.join(known)}")


def _check_model(field: str, path: str) -> None:
    _check_demo(field, path, DEMO_MODELS)
    if _skipped(path):
        return
    local = Path(path).expanduser()
    if not local.exists():
        if path.startswith((".", "/", "~")):
            raise SpecError(
                field,
                f"{path} does not exist; give a directory saved with save_pretrained or a "
                "Hugging Face hub id",
            )
        return  # a hub id (``org/name``): loaded, or refused offline, by the sweep
    if not local.is_dir():
        raise SpecError(field, f"{path} is a file; give the directory saved with save_pretrained")
    if not any(local.iterdir()):
        raise SpecError(
            field, f"{path} is an empty directory; give a directory saved with save_pretrained"
        )
    if not (local / "config.json").is_file():
        raise SpecError(
            field,
            f"{path} has no config.json, so it is not a model saved with save_pretrained; "
            "give the checkpoint's directory",
        )


def _check_file(field: str, path: str) -> None:
    if is_uri(path):
        return
    local = Path(path).expanduser()
    if not local.exists():
        raise SpecError(field, f"{path}: no such file; check the path")
    if not local.is_file():
        raise SpecError(field, f"{path} is a directory; give the file")


def _check_data(field: str, path: str) -> None:
    _check_demo(field, path, tuple(SPLITS))
    if _skipped(path):
        return
    local = Path(path.split("#", 1)[0]).expanduser()
    if local.is_dir() and not any(local.iterdir()):
        raise SpecError(
            field, f"{path} is an empty directory; give .parquet, .jsonl or .csv documents"
        )
    if local.is_dir() and any((local / m).exists() for m in ("dataset_dict.json", "state.json")):
        return  # a dataset saved with `save_to_disk`, read by `datasets`
    try:
        locate(path)
    except AnnealscaleError as err:
        raise SpecError(field, str(err)) from None
