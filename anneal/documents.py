"""Reading documents (text records) from the inputs a spec names.

An input is one of:

- a Parquet, JSONL or CSV file, a directory of them (searched recursively), or a glob;
- the same behind a URI that pyarrow's filesystems understand (``s3://``, ``gs://``,
  ``file://``), globs included;
- a Hugging Face dataset saved with ``save_to_disk`` (a directory holding
  ``dataset_info.json``/``state.json`` or ``dataset_dict.json``); ``DIR#split`` picks a
  split of a saved ``DatasetDict`` (``train`` by default);
- ``hub:NAME`` or ``hub:NAME#split``: a dataset on the Hugging Face hub (needs network).

The text lives in a configurable field. Every failure names the file and what to do. Two
defects are skipped rather than fatal, because one bad record or shard in a crawl should
not stop a sweep: an empty shard (no bytes or no records), and a record whose bytes are
not valid UTF-8. Each skip is logged with the file and counted in a `ReadReport`, which
curation writes into its ledger. An input that yields no documents at all is an error,
never an empty pool.
"""

from __future__ import annotations

import fnmatch
import glob
import io
import json
import logging
import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from annealscale.core.errors import AnnealscaleError

log = logging.getLogger(__name__)

SUFFIXES = (".parquet", ".jsonl", ".json", ".csv")
HUB_PREFIX = "hub:"
_URI_SCHEMES = ("s3://", "gs://", "gcs://", "file://", "hdfs://", "abfs://", "az://")


@dataclass
class ReadReport:
    """What reading skipped, by file: empty shards and records that are not UTF-8."""

    empty_files: list[str] = field(default_factory=list)
    invalid_utf8: dict[str, int] = field(default_factory=dict)
    """Records skipped per file because their bytes are not valid UTF-8."""

    @property
    def skipped_records(self) -> int:
        return sum(self.invalid_utf8.values())

    def to_json(self) -> dict:
        return {"empty_files": list(self.empty_files), "invalid_utf8": dict(self.invalid_utf8)}


@dataclass(frozen=True)
class DataFile:
    """One data file: the pyarrow filesystem holding it and its path there."""

    fs: object
    path: str
    display: str
    """The name used in messages: the local path or the full URI."""

    @property
    def suffix(self) -> str:
        return os.path.splitext(self.path)[1]


def is_uri(path: str) -> bool:
    return path.startswith(_URI_SCHEMES)


def is_saved_dataset(path: str) -> bool:
    """True for a directory written by ``datasets`` ``save_to_disk`` (optionally ``#split``)."""
    local = Path(path.split("#", 1)[0])
    return local.is_dir() and any(
        (local / marker).exists() for marker in ("dataset_dict.json", "state.json")
    )


def locate(path: str) -> list[DataFile]:
    """The data files behind ``path`` (local or URI) in sorted order."""
    if is_uri(path):
        return _locate_uri(path)
    if any(ch in path for ch in "*?["):
        files = [Path(p) for p in sorted(glob.glob(path, recursive=True))]
    elif Path(path).is_dir():
        files = sorted(p for p in Path(path).rglob("*") if p.suffix in SUFFIXES and p.is_file())
    elif Path(path).exists():
        files = [Path(path)]
    else:
        raise AnnealscaleError(f"{path}: no such file or directory; check the path in the spec")
    files = [f for f in files if f.suffix in SUFFIXES and f.is_file()]
    if not files:
        raise AnnealscaleError(f"{path}: no .parquet, .jsonl or .csv files found there")
    from pyarrow.fs import LocalFileSystem

    local = LocalFileSystem()
    return [DataFile(local, str(f.resolve()), str(f)) for f in files]


def _locate_uri(uri: str) -> list[DataFile]:
    from pyarrow import fs as pafs

    scheme = uri.split("://", 1)[0]
    pattern_at = min((uri.find(ch) for ch in "*?[" if ch in uri), default=-1)
    base_uri = uri if pattern_at < 0 else uri[: uri.rfind("/", 0, pattern_at)]
    try:
        filesystem, base = pafs.FileSystem.from_uri(base_uri)
    except Exception as err:  # pyarrow raises several types for a bad or unreachable URI
        raise AnnealscaleError(
            f"{uri}: cannot open this URI ({err}); check the scheme, bucket and credentials"
        ) from None

    def shown(p: str) -> str:
        return f"{scheme}://{p}" if scheme != "file" else f"file://{p}"

    info = filesystem.get_file_info(base)
    if info.type == pafs.FileType.NotFound:
        raise AnnealscaleError(f"{uri}: no such file or directory; check the path in the spec")
    if info.type == pafs.FileType.File and pattern_at < 0:
        paths = [base]
    else:
        selector = pafs.FileSelector(base, recursive=True)
        paths = sorted(i.path for i in filesystem.get_file_info(selector) if i.is_file)
        if pattern_at >= 0:
            pattern = base + uri[len(base_uri) :]
            paths = [p for p in paths if fnmatch.fnmatch(p, pattern)]
    files = [DataFile(filesystem, p, shown(p)) for p in paths if os.path.splitext(p)[1] in SUFFIXES]
    if not files:
        raise AnnealscaleError(f"{uri}: no .parquet, .jsonl or .csv files found there")
    return files


def document_files(path: str) -> list[Path]:
    """The local data files behind ``path`` in sorted order."""
    return [Path(f.display) for f in locate(path)]


def read_texts(path: str, text_field: str = "text", report: ReadReport | None = None) -> list[str]:
    """All non-empty texts behind ``path``, in file then row order (see the module
    docstring for what ``path`` may be and what is skipped)."""
    report = report if report is not None else ReadReport()
    if path.startswith(HUB_PREFIX) or is_saved_dataset(path):
        texts = _read_hf_dataset(path, text_field)
    else:
        texts = []
        for file in locate(path):
            texts.extend(_read_file(file, text_field, report))
    if not texts:
        raise AnnealscaleError(f"{path}: contains no non-empty '{text_field}' values")
    return texts


def _read_file(file: DataFile, text_field: str, report: ReadReport) -> list[str]:
    if file.fs.get_file_info(file.path).size == 0:
        return _skip_empty(file, report)
    if file.suffix == ".parquet":
        values = _read_parquet(file, text_field)
    elif file.suffix == ".csv":
        values = _read_csv(file, text_field)
    else:
        values = _read_jsonl(file, text_field)
    if not values:
        return _skip_empty(file, report)
    texts, bad = _decode(values)
    if bad:
        if bad == len(values):
            raise AnnealscaleError(
                f"{file.display}: no record is valid UTF-8 text; re-encode the file as UTF-8"
            )
        report.invalid_utf8[file.display] = report.invalid_utf8.get(file.display, 0) + bad
        log.warning("%s: skipped %d record(s) that are not valid UTF-8", file.display, bad)
    return [t for t in texts if t.strip()]


def _skip_empty(file: DataFile, report: ReadReport) -> list[str]:
    report.empty_files.append(file.display)
    log.warning("%s: empty shard (no records); skipped", file.display)
    return []


def _decode(values: list) -> tuple[list[str], int]:
    """Strings as they are, bytes decoded as strict UTF-8; returns texts and the number of
    records skipped for invalid bytes. Nulls and non-text values count as empty."""
    texts, bad = [], 0
    for value in values:
        if isinstance(value, bytes):
            try:
                value = value.decode("utf-8")
            except UnicodeDecodeError:
                bad += 1
                continue
        if isinstance(value, str):
            texts.append(value)
    return texts, bad


def _read_parquet(file: DataFile, text_field: str) -> list:
    try:
        with file.fs.open_input_file(file.path) as handle:
            parquet = pq.ParquetFile(handle)
            names = parquet.schema_arrow.names
            if text_field not in names:
                raise AnnealscaleError(_no_column(file.display, text_field, names))
            return parquet.read(columns=[text_field]).column(text_field).to_pylist()
    except AnnealscaleError:
        raise
    except Exception as err:  # pyarrow raises several types for a corrupt file
        raise AnnealscaleError(f"{file.display}: not a readable Parquet file ({err})") from None


def _read_csv(file: DataFile, text_field: str) -> list:
    import csv as pycsv

    from pyarrow import csv

    with file.fs.open_input_stream(file.path) as handle:
        data = handle.read()
    if not data.strip():
        return []
    try:
        first_line = data.split(b"\n", 1)[0].decode("utf-8", errors="replace")
        header = next(pycsv.reader([first_line]), [])
        if text_field not in header:
            raise AnnealscaleError(_no_column(file.display, text_field, header))
        table = csv.read_csv(
            io.BytesIO(data),
            convert_options=csv.ConvertOptions(
                include_columns=[text_field], column_types={text_field: pa.binary()}
            ),
        )
    except AnnealscaleError:
        raise
    except pa.ArrowInvalid as err:
        raise AnnealscaleError(f"{file.display}: not a readable CSV file ({err})") from None
    return table.column(text_field).to_pylist()


def _read_jsonl(file: DataFile, text_field: str) -> list:
    values: list = []
    with file.fs.open_input_stream(file.path) as handle:
        lines = handle.read().split(b"\n")
    for lineno, raw in enumerate(lines, 1):
        if not raw.strip():
            continue
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError:
            values.append(b"\xff")  # counted as one invalid record by `_decode`
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            raise AnnealscaleError(f"{file.display}:{lineno}: not valid JSON") from None
        if not isinstance(record, dict):
            raise AnnealscaleError(
                f"{file.display}:{lineno}: expected a JSON object with a '{text_field}' field"
            )
        if text_field not in record:
            raise AnnealscaleError(
                f"{file.display}:{lineno}: record has no field '{text_field}'; "
                "set text_field in the spec"
            )
        values.append(record[text_field])
    return values


def _no_column(name: str, text_field: str, columns: list[str]) -> str:
    return (
        f"{name}: has no column '{text_field}' (columns: {', '.join(columns)}); "
        "set text_field in the spec"
    )


def _read_hf_dataset(path: str, text_field: str) -> list[str]:
    """A saved (``save_to_disk``) or hub dataset, one split, as texts."""
    import datasets

    location, _, split = path.partition("#")
    try:
        if location.startswith(HUB_PREFIX):
            name = location[len(HUB_PREFIX) :]
            data = datasets.load_dataset(name, split=split or "train")
        else:
            data = datasets.load_from_disk(location)
    except Exception as err:  # datasets raises many types (offline, not found, bad files)
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise AnnealscaleError(
            f"{path}: cannot load this Hugging Face dataset ({first}); "
            "check the name or directory (hub datasets need network access)"
        ) from None
    if isinstance(data, datasets.DatasetDict):
        split = split or "train"
        if split not in data:
            raise AnnealscaleError(
                f"{path}: has no split '{split}' (splits: {', '.join(data)}); "
                "name one as PATH#SPLIT"
            )
        data = data[split]
    if text_field not in data.column_names:
        raise AnnealscaleError(_no_column(path, text_field, data.column_names))
    texts, _ = _decode(data[text_field])
    return [t for t in texts if t.strip()]


def files_identity(path: str) -> str:
    """Identity of the files behind ``path`` (a file, directory, glob, URI, saved dataset
    or model directory): full paths, sizes and modification times. Changes when any file
    is replaced, so caches and cell identities keyed on it never serve stale data. A hub
    dataset is identified by its name only."""
    from annealscale.core.hashing import content_hash

    if path.startswith(HUB_PREFIX):
        return content_hash(path)
    location = path.split("#", 1)[0]
    p = Path(location)
    is_model = (p / "config.json").exists() or (p / "tokenizer_config.json").exists()
    if p.is_dir() and (is_model or is_saved_dataset(location)):
        files = sorted(f for f in p.rglob("*") if f.is_file())
        stamp = [[str(f.resolve()), f.stat().st_size, f.stat().st_mtime_ns] for f in files]
        return content_hash([stamp, path])
    stamps = []
    for f in locate(path):
        info = f.fs.get_file_info(f.path)
        stamps.append([f.display, info.size, info.mtime_ns])
    return content_hash(stamps)


def as_parquet(path: str, text_field: str, cache_dir: Path) -> str:
    """``path`` itself when it is Parquet with a ``text`` column, else a cached Parquet copy
    with the texts under ``text`` (the column every later step reads)."""
    if not path.startswith(HUB_PREFIX) and not is_saved_dataset(path):
        files = locate(path)
        if all(f.suffix == ".parquet" for f in files) and text_field == "text":
            for f in files:
                _read_parquet_schema(f, text_field)
            return path
    out = Path(cache_dir) / "documents" / f"{files_identity(path)}-{text_field}.parquet"
    if not out.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(f".{out.name}.{uuid.uuid4().hex}.tmp")
        pq.write_table(pa.table({"text": read_texts(path, text_field)}), tmp)
        os.replace(tmp, out)
    return str(out)


def _read_parquet_schema(file: DataFile, text_field: str) -> None:
    try:
        with file.fs.open_input_file(file.path) as handle:
            names = pq.ParquetFile(handle).schema_arrow.names
    except Exception as err:  # pyarrow raises several types for a corrupt file
        raise AnnealscaleError(f"{file.display}: not a readable Parquet file ({err})") from None
    if text_field not in names:
        raise AnnealscaleError(_no_column(file.display, text_field, names))
