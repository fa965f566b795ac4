"""Reading documents (text records) from the files a spec names.

Accepts a Parquet or JSONL file, a directory of them, or a glob. Every failure names the
file and what to do; an input that yields no documents is an error, never an empty pool.
"""

from __future__ import annotations

import glob
import json
import os
import uuid
from pathlib import Path

import pyarrow.parquet as pq

from anneal.errors import AnnealscaleError

SUFFIXES = (".parquet", ".jsonl", ".json")


def document_files(path: str) -> list[Path]:
    """The data files behind ``path`` in sorted order."""
    if any(ch in path for ch in "*?["):
        files = [Path(p) for p in sorted(glob.glob(path))]
    elif Path(path).is_dir():
        files = sorted(p for p in Path(path).rglob("*") if p.suffix in SUFFIXES)
    elif Path(path).exists():
        files = [Path(path)]
    else:
        raise AnnealscaleError(f"{path}: no such file or directory; check the path in the spec")
    files = [f for f in files if f.suffix in SUFFIXES]
    if not files:
        raise AnnealscaleError(f"{path}: no .parquet or .jsonl files found there")
    return files


def read_texts(path: str, text_field: str = "text") -> list[str]:
    """All non-empty texts in the files behind ``path``, in file then row order."""
    texts: list[str] = []
    for file in document_files(path):
        texts.extend(_read_file(file, text_field))
    if not texts:
        raise AnnealscaleError(f"{path}: contains no non-empty '{text_field}' values")
    return texts


def _read_file(file: Path, text_field: str) -> list[str]:
    if file.suffix == ".parquet":
        _check_parquet_column(file, text_field)
        values = pq.read_table(file, columns=[text_field]).column(text_field).to_pylist()
    else:
        values = []
        with open(file, encoding="utf-8", errors="replace") as handle:
            for lineno, line in enumerate(handle, 1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    raise AnnealscaleError(f"{file}:{lineno}: not valid JSON") from None
                if not isinstance(record, dict):
                    raise AnnealscaleError(
                        f"{file}:{lineno}: expected a JSON object with a '{text_field}' field"
                    )
                if text_field not in record:
                    raise AnnealscaleError(
                        f"{file}:{lineno}: record has no field '{text_field}'; "
                        "set text_field in the spec"
                    )
                values.append(record[text_field])
    return [v for v in values if isinstance(v, str) and v.strip()]


def files_identity(path: str) -> str:
    """Identity of the files behind ``path`` (a file, directory, glob, or a model
    directory): full paths, sizes and modification times. Changes when any file is
    replaced, so caches and cell identities keyed on it never serve stale data."""
    from anneal.config import content_hash

    p = Path(path)
    if p.is_dir() and ((p / "config.json").exists() or (p / "tokenizer_config.json").exists()):
        files = sorted(f for f in p.iterdir() if f.is_file())  # a model or tokenizer directory
    else:
        files = document_files(path)
    return content_hash([[str(f.resolve()), f.stat().st_size, f.stat().st_mtime_ns] for f in files])


def _check_parquet_column(file: Path, text_field: str) -> None:
    try:
        schema = pq.read_schema(file)
    except Exception as err:  # pyarrow raises several types for a corrupt file
        raise AnnealscaleError(f"{file}: not a readable Parquet file ({err})") from None
    if text_field not in schema.names:
        raise AnnealscaleError(
            f"{file}: has no column '{text_field}' (columns: {', '.join(schema.names)}); "
            "set text_field in the spec"
        )


def as_parquet(path: str, text_field: str, cache_dir: Path) -> str:
    """``path`` itself when it is Parquet with a ``text`` column, else a cached Parquet copy
    with the texts under ``text`` (the column every later step reads)."""
    files = document_files(path)
    if all(f.suffix == ".parquet" for f in files) and text_field == "text":
        for f in files:
            _check_parquet_column(f, text_field)
        return path
    out = Path(cache_dir) / "documents" / f"{files_identity(path)}-{text_field}.parquet"
    if not out.exists():
        import pyarrow as pa

        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(f".{out.name}.{uuid.uuid4().hex}.tmp")
        pq.write_table(pa.table({"text": read_texts(path, text_field)}), tmp)
        os.replace(tmp, out)
    return str(out)
