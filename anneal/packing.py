"""Tokenising documents and packing them into fixed-length training windows.

A window is ``seq_len + 1`` token ids: the model reads the first ``seq_len`` and predicts
the last ``seq_len``. Documents are joined with the EOS token and cut into consecutive
windows; the partial window at the end of a batch of documents is dropped (under 0.2% of
tokens at the batch sizes used here), so every packed token is a real token.

Packing is a Ray Data job, except for inputs under `IN_PROCESS_BYTES` of Parquet: those are
packed in this process by the same function, batch for batch (a Ray Data job costs about
3 s to start and finish on a small machine; tokenising a few MB takes well under that). A
sweep packs its replay and two evaluation sets and every pool, so on small sweeps (the
demo, tests) the jobs' fixed cost dominated preparation.
"""

from __future__ import annotations

import functools
import logging
import os
import shutil
import uuid
from pathlib import Path

import numpy as np

from annealscale.core.errors import AnnealscaleError
from annealscale.core.hashing import content_hash

log = logging.getLogger(__name__)

DOCS_PER_PACKING_BATCH = 256
IN_PROCESS_BYTES = 8 * 2**20
"""Document Parquet (bytes on storage) up to which packing runs in this process."""
PACKING_LAYOUT = "per-file-batches"
"""Part of the cache key: copies packed under an earlier layout are not reused."""
DOCS_PER_PACKING_UNIT = 64 * DOCS_PER_PACKING_BATCH
"""Documents of one file per Ray Data task; a multiple of the batch, so that tasks never
change where batches (and so dropped partial windows) fall."""


def pack_token_lists(token_lists: list[list[int]], eos_id: int, seq_len: int) -> np.ndarray:
    """Join documents with EOS and cut into ``(n, seq_len + 1)`` int32 windows."""
    width = seq_len + 1
    flat = [t for tokens in token_lists for t in (*tokens, eos_id)]
    n = len(flat) // width
    return np.asarray(flat[: n * width], dtype=np.int32).reshape(n, width)


@functools.lru_cache(maxsize=4)
def _tokenizer(path: str):
    from annealscale.anneal.model import load_tokenizer

    return load_tokenizer(path)


def pack_texts(texts: list[str], tokenizer_path: str, seq_len: int) -> np.ndarray:
    """Tokenise ``texts`` with the tokenizer at ``tokenizer_path`` and pack them."""
    tokenizer = _tokenizer(tokenizer_path)
    ids = tokenizer(list(texts), add_special_tokens=False)["input_ids"]
    return pack_token_lists(ids, tokenizer.eos_token_id, seq_len)


def _pack_batch(batch: dict, *, tokenizer_path: str, seq_len: int, text_field: str) -> dict:
    texts = [t for t in batch[text_field] if isinstance(t, str) and t.strip()]
    windows = pack_texts(texts, tokenizer_path, seq_len)
    return {"tokens": windows}


def packed_dir_for(docs_path: str, tokenizer_path: str, seq_len: int, cache_dir: Path) -> Path:
    """Cache location of a packed copy of ``docs_path`` for this tokenizer and length."""
    from annealscale.anneal.documents import files_identity

    key = [files_identity(docs_path), files_identity(tokenizer_path), seq_len, PACKING_LAYOUT]
    return Path(cache_dir) / "packed" / content_hash(key)


def pack_documents(
    docs_path: str,
    *,
    tokenizer_path: str,
    seq_len: int,
    cache_dir: Path,
    text_field: str = "text",
    in_process_bytes: int = IN_PROCESS_BYTES,
) -> Path:
    """Pack the document Parquet at ``docs_path`` into windows.

    Returns a directory of Parquet files with one ``tokens`` column of ``seq_len + 1``
    int32 ids per row (a Ray Data tensor column), in document order. Cached: a second call
    with the same input file contents, tokenizer and length returns at once. Inputs up to
    ``in_process_bytes`` are packed in this process, larger ones by a Ray Data job (a task per
    `DOCS_PER_PACKING_UNIT` documents of a file). Either way batches of
    `DOCS_PER_PACKING_BATCH` documents are cut per file, so the windows never depend on how
    the cluster splits the work.
    """
    from annealscale.anneal.documents import locate

    out = packed_dir_for(docs_path, tokenizer_path, seq_len, cache_dir)
    if (out / "_SUCCESS").exists():
        return out
    files = locate(docs_path)
    size = sum(f.fs.get_file_info(f.path).size or 0 for f in files)
    # A private temporary directory, renamed into place only when complete and marked:
    # an interrupted or concurrent packing never leaves a partial result under `out`.
    tmp = out.with_name(f".{out.name}.{uuid.uuid4().hex}.tmp")
    pack = dict(tokenizer_path=tokenizer_path, seq_len=seq_len, text_field=text_field)
    try:
        if size <= in_process_bytes:
            _pack_in_process(files, tmp, **pack)
        else:
            _pack_with_ray_data(files, tmp, **pack)
        if count_windows(tmp) == 0:  # no file, or only empty ones
            raise AnnealscaleError(
                f"{docs_path}: packing produced no windows of {seq_len + 1} tokens; "
                "the documents are too few or too short"
            )
        (tmp / "_SUCCESS").touch()
        try:
            os.replace(tmp, out)
        except OSError:
            if not (out / "_SUCCESS").exists():  # someone else's finished copy is as good
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def _pack_with_ray_data(files: list, out: Path, **pack) -> None:
    import ray.data

    units = [
        {"file": i, "start": start, "stop": min(start + DOCS_PER_PACKING_UNIT, rows)}
        for i, rows in enumerate(_row_counts(files))
        for start in range(0, rows, DOCS_PER_PACKING_UNIT)
    ]
    if not units:
        return
    ctx = ray.data.DataContext.get_current()
    ctx.execution_options.preserve_order = True  # packed order must not depend on scheduling
    ctx.enable_progress_bars = False
    ds = ray.data.from_items(units, override_num_blocks=len(units)).map_batches(
        _pack_units,
        batch_size=1,
        batch_format="numpy",
        fn_kwargs={"files": files, **pack},
    )
    ds.write_parquet(str(out))


def _row_counts(files: list) -> list[int]:
    import pyarrow.parquet as pq

    counts = []
    for file in files:
        with file.fs.open_input_file(file.path) as handle:
            counts.append(pq.ParquetFile(handle).metadata.num_rows)
    return counts


def _pack_units(units: dict, *, files: list, **pack) -> dict:
    """A Ray Data task's share: whole packing batches of one file's row range."""
    parts = [
        _pack_rows(files[int(i)], int(start), int(stop), **pack)
        for i, start, stop in zip(units["file"], units["start"], units["stop"], strict=True)
    ]
    return {"tokens": np.concatenate(parts)}


def _pack_rows(file, start: int, stop: int, **pack) -> np.ndarray:
    """Windows of rows ``start:stop`` of ``file``, packed batch by batch; ``start`` is a
    multiple of the batch size, so the batches are the file's own."""
    import pyarrow.parquet as pq

    text_field, empty = pack["text_field"], np.zeros((0, pack["seq_len"] + 1), dtype=np.int32)
    with file.fs.open_input_file(file.path) as handle:
        parquet = pq.ParquetFile(handle)
        groups, first, at = [], None, 0
        for g in range(parquet.metadata.num_row_groups):  # only the groups holding the range
            rows = parquet.metadata.row_group(g).num_rows
            if at < stop and at + rows > start:
                groups.append(g)
                first = at if first is None else first
            at += rows
        if not groups:
            return empty
        texts = parquet.read_row_groups(groups, columns=[text_field]).column(text_field)
    texts = texts.slice(start - first, stop - start)
    parts = [empty]
    for at in range(0, len(texts), DOCS_PER_PACKING_BATCH):
        batch = {text_field: texts.slice(at, DOCS_PER_PACKING_BATCH).to_pylist()}
        parts.append(_pack_batch(batch, **pack)["tokens"])
    return np.concatenate(parts)


def _pack_in_process(files: list, out: Path, **pack) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq
    from ray.data.extensions import ArrowTensorArray

    windows = np.concatenate(
        [
            _pack_rows(file, 0, rows, **pack)
            for file, rows in zip(files, _row_counts(files), strict=True)
        ]
    )
    if len(windows):
        out.mkdir(parents=True, exist_ok=True)
        table = pa.table({"tokens": ArrowTensorArray.from_numpy(windows)})
        pq.write_table(table, out / "part-000000.parquet")


def read_windows(packed_dir: Path, max_windows: int | None = None) -> np.ndarray:
    """Packed windows in memory ``(n, seq_len + 1)``, for evaluation sets.

    With ``max_windows``, the windows are spread evenly over the whole set rather than
    taken from its start: packed sets keep document order, so a prefix would be a few
    modules only.
    """
    import pyarrow.parquet as pq

    parts = []
    for file in sorted(Path(packed_dir).glob("*.parquet")):
        column = pq.read_table(file, columns=["tokens"]).column("tokens")
        parts.append(np.stack([np.asarray(v, dtype=np.int32) for v in column.to_pylist()]))
    if not parts:
        raise AnnealscaleError(f"{packed_dir}: holds no packed windows")
    windows = np.concatenate(parts)
    if max_windows is None or max_windows >= len(windows):
        return windows
    return windows[np.linspace(0, len(windows) - 1, max_windows).round().astype(np.int64)]


def count_windows(packed_dir: Path) -> int:
    """Number of windows in a packed directory (from Parquet metadata)."""
    import pyarrow.parquet as pq

    return sum(pq.ParquetFile(f).metadata.num_rows for f in Path(packed_dir).glob("*.parquet"))
