"""Tokenising documents and packing them into fixed-length training windows.

A window is ``seq_len + 1`` token ids: the model reads the first ``seq_len`` and predicts
the last ``seq_len``. Documents are joined with the EOS token and cut into consecutive
windows; the partial window at the end of a batch of documents is dropped (under 0.2% of
tokens at the batch sizes used here), so every packed token is a real token.
"""

from __future__ import annotations

import functools
import logging
import os
import shutil
import uuid
from pathlib import Path

import numpy as np

from anneal.config import content_hash
from anneal.errors import AnnealscaleError

log = logging.getLogger(__name__)

DOCS_PER_PACKING_BATCH = 256


def pack_token_lists(token_lists: list[list[int]], eos_id: int, seq_len: int) -> np.ndarray:
    """Join documents with EOS and cut into ``(n, seq_len + 1)`` int32 windows."""
    width = seq_len + 1
    flat = [t for tokens in token_lists for t in (*tokens, eos_id)]
    n = len(flat) // width
    return np.asarray(flat[: n * width], dtype=np.int32).reshape(n, width)


@functools.lru_cache(maxsize=4)
def _tokenizer(path: str):
    from anneal.model import load_tokenizer

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
    from anneal.documents import files_identity

    key = [files_identity(docs_path), files_identity(tokenizer_path), seq_len]
    return Path(cache_dir) / "packed" / content_hash(key)


def pack_documents(
    docs_path: str, *, tokenizer_path: str, seq_len: int, cache_dir: Path, text_field: str = "text"
) -> Path:
    """Pack the document Parquet at ``docs_path`` into windows with a Ray Data job.

    Returns a directory of Parquet files with one ``tokens`` column of ``seq_len + 1``
    int32 ids per row, in document order. Cached: a second call with the same input
    file contents, tokenizer and length returns at once.
    """
    import ray.data

    out = packed_dir_for(docs_path, tokenizer_path, seq_len, cache_dir)
    if (out / "_SUCCESS").exists():
        return out
    ctx = ray.data.DataContext.get_current()
    ctx.execution_options.preserve_order = True  # packed order must not depend on scheduling
    ctx.enable_progress_bars = False
    ds = (
        ray.data.read_parquet(docs_path)
        .select_columns([text_field])
        .map_batches(
            _pack_batch,
            batch_size=DOCS_PER_PACKING_BATCH,
            batch_format="numpy",
            fn_kwargs={
                "tokenizer_path": tokenizer_path,
                "seq_len": seq_len,
                "text_field": text_field,
            },
        )
    )
    # A private temporary directory, renamed into place only when complete and marked:
    # an interrupted or concurrent packing never leaves a partial result under `out`.
    tmp = out.with_name(f".{out.name}.{uuid.uuid4().hex}.tmp")
    try:
        ds.write_parquet(str(tmp))
        if not any(tmp.glob("*.parquet")):
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
