"""Reading documents from Parquet/JSONL and packing them into training windows."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from annealscale.anneal.documents import as_parquet, document_files, read_texts
from annealscale.anneal.packing import pack_texts, pack_token_lists
from annealscale.core.errors import AnnealscaleError

# --- pack_token_lists ---------------------------------------------------------------------


def test_pack_joins_documents_with_eos_in_order():
    windows = pack_token_lists([[1, 2, 3], [4, 5], [6, 7, 8, 9]], eos_id=0, seq_len=3)
    assert windows.dtype == np.int32
    assert windows.shape == (3, 4)  # (n, seq_len + 1)
    assert windows.tolist() == [[1, 2, 3, 0], [4, 5, 0, 6], [7, 8, 9, 0]]


def test_pack_drops_the_partial_tail():
    windows = pack_token_lists([[1, 2, 3], [4, 5], [6, 7, 8, 9]], eos_id=0, seq_len=4)
    assert windows.tolist() == [[1, 2, 3, 0, 4], [5, 0, 6, 7, 8]]  # [9, 0] dropped


@pytest.mark.parametrize("token_lists", [[], [[1, 2]], [[1], [2]]])
def test_pack_too_few_tokens_gives_no_windows(token_lists):
    windows = pack_token_lists(token_lists, eos_id=0, seq_len=8)
    assert windows.shape == (0, 9)


def test_pack_property_every_window_is_a_slice_of_the_joined_stream():
    rng = np.random.default_rng(0)
    docs = [rng.integers(1, 100, size=rng.integers(0, 40)).tolist() for _ in range(50)]
    stream = [t for d in docs for t in (*d, 0)]
    for seq_len in (8, 15, 64):
        windows = pack_token_lists(docs, eos_id=0, seq_len=seq_len)
        n = len(stream) // (seq_len + 1)
        assert windows.shape == (n, seq_len + 1)
        assert windows.reshape(-1).tolist() == stream[: n * (seq_len + 1)]


def test_pack_texts_with_a_real_tokenizer(tokenizer, tokenizer_dir):
    texts = ["Solve 3*x + 4 = 10 for x.", "The river walked beside the old house.", "x = 2"]
    windows = pack_texts(texts, str(tokenizer_dir), seq_len=8)
    ids = tokenizer(texts, add_special_tokens=False)["input_ids"]
    eos = tokenizer.eos_token_id
    np.testing.assert_array_equal(windows, pack_token_lists(ids, eos, 8))
    # the windows decode back to the documents joined by EOS (byte-level BPE is lossless)
    joined = "".join(t + tokenizer.eos_token for t in texts)
    decoded = tokenizer.decode(windows.reshape(-1).tolist(), skip_special_tokens=False)
    assert len(decoded) > 0 and joined.startswith(decoded)


# --- read_texts ---------------------------------------------------------------------------


def _parquet(path, **columns):
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(columns), path)
    return path


def _jsonl(path, records):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_read_parquet_keeps_order_and_skips_empty_values(tmp_path):
    path = _parquet(tmp_path / "d.parquet", text=["a b", "", None, "  ", "c"], n=[1, 2, 3, 4, 5])
    assert read_texts(str(path)) == ["a b", "c"]


def test_read_jsonl_with_custom_field_and_blank_lines(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"body": "first"}\n\n{"body": "second", "x": 1}\n{"body": ""}\n')
    assert read_texts(str(path), text_field="body") == ["first", "second"]


def test_read_directory_and_glob_in_sorted_file_order(tmp_path):
    root = tmp_path / "docs"
    _parquet(root / "b.parquet", text=["b1", "b2"])
    _jsonl(root / "a.jsonl", [{"text": "a1"}])
    _jsonl(root / "sub" / "c.jsonl", [{"text": "c1"}, {"text": "c2"}])
    (root / "README.txt").write_text("not data")

    assert read_texts(str(root)) == ["a1", "b1", "b2", "c1", "c2"]
    assert read_texts(str(root / "*.jsonl")) == ["a1"]
    assert read_texts(str(root / "*")) == ["a1", "b1", "b2"]  # README.txt skipped
    assert [f.name for f in document_files(str(root))] == ["a.jsonl", "b.parquet", "c.jsonl"]


def _error(path, text_field="text") -> str:
    with pytest.raises(AnnealscaleError) as info:
        read_texts(str(path), text_field)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_missing_path(tmp_path):
    path = tmp_path / "nowhere.parquet"
    assert _error(path) == f"{path}: no such file or directory; check the path in the spec"


def test_glob_matching_nothing(tmp_path):
    assert _error(tmp_path / "*.parquet").startswith(f"{tmp_path / '*.parquet'}: no .parquet")


def test_parquet_without_the_text_column_lists_the_columns(tmp_path):
    path = _parquet(tmp_path / "d.parquet", body=["x"], id=[1])
    message = _error(path)
    assert message.startswith(f"{path}: has no column 'text'")
    assert "(columns: body, id)" in message
    assert "set text_field" in message


def test_corrupt_parquet(tmp_path):
    path = tmp_path / "d.parquet"
    path.write_bytes(b"this is not a parquet file" * 4)
    assert _error(path).startswith(f"{path}: not a readable Parquet file")


def test_malformed_jsonl_line_names_file_and_line(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"text": "ok"}\n{"text": "broken\n{"text": "fine"}\n')
    assert _error(path) == f"{path}:2: not valid JSON"


def test_jsonl_record_without_the_field_names_file_and_line(tmp_path):
    path = _jsonl(tmp_path / "d.jsonl", [{"text": "a"}, {"text": "b"}, {"body": "c"}])
    assert _error(path).startswith(f"{path}:3: record has no field 'text'")


@pytest.mark.parametrize("line", ["5", '"some context"', '["text"]'])
def test_jsonl_line_that_is_not_an_object_names_file_and_line(tmp_path, line):
    path = tmp_path / "d.jsonl"
    path.write_text('{"text": "ok"}\n' + line + "\n")
    assert _error(path).startswith(f"{path}:2: ")


def test_directory_without_data_files(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    assert _error(tmp_path) == f"{tmp_path}: no .parquet, .jsonl or .csv files found there"


def test_only_empty_texts(tmp_path):
    path = _parquet(tmp_path / "d.parquet", text=["", "   ", None])
    assert _error(path) == f"{path}: contains no non-empty 'text' values"


# --- as_parquet ---------------------------------------------------------------------------


def test_as_parquet_converts_jsonl_to_a_text_column(tmp_path):
    src = _jsonl(tmp_path / "in" / "d.jsonl", [{"body": "one"}, {"body": ""}, {"body": "two"}])
    out = as_parquet(str(src), "body", tmp_path / "cache")
    assert out != str(src)
    table = pq.read_table(out)
    assert table.column_names == ["text"]
    assert table.column("text").to_pylist() == ["one", "two"]

    mtime = Path(out).stat().st_mtime_ns
    assert as_parquet(str(src), "body", tmp_path / "cache") == out  # cached
    assert Path(out).stat().st_mtime_ns == mtime


def test_as_parquet_renames_a_custom_parquet_column(tmp_path):
    src = _parquet(tmp_path / "in.parquet", body=["x", "y"])
    out = as_parquet(str(src), "body", tmp_path / "cache")
    assert pq.read_table(out).column("text").to_pylist() == ["x", "y"]


def test_as_parquet_returns_parquet_with_text_column_itself(tmp_path):
    src = _parquet(tmp_path / "in.parquet", text=["x"])
    assert as_parquet(str(src), "text", tmp_path / "cache") == str(src)
    assert not (tmp_path / "cache").exists()


def test_as_parquet_checks_the_column_of_parquet_it_passes_through(tmp_path):
    src = _parquet(tmp_path / "in.parquet", body=["x"])
    with pytest.raises(AnnealscaleError, match="has no column 'text'"):
        as_parquet(str(src), "text", tmp_path / "cache")


# --- pack_documents: in this process or as a Ray Data job ------------------------------


@pytest.fixture
def shards(tmp_path):
    """Three document shards: 300 + 40 + 520 documents (files larger and smaller than one
    packing batch) in row groups of 100, with lengths that vary so batch ends cut windows
    differently."""
    rng = np.random.default_rng(3)
    words = "the river x = 2 solve walked 3*x + 4 garden letter".split()
    directory = tmp_path / "docs"
    for shard, n in enumerate((300, 40, 520)):
        texts = [" ".join(rng.choice(words, size=rng.integers(3, 60))) for _ in range(n)]
        directory.mkdir(exist_ok=True)
        pq.write_table(pa.table({"text": texts}), directory / f"part-{shard:03d}.parquet", 100)
    return directory


@pytest.mark.parametrize("unit", [None, 512])
def test_in_process_and_ray_data_packing_give_the_same_windows(
    ray_local, shards, tokenizer_dir, tmp_path, monkeypatch, unit
):
    """Whatever share of a file a Ray Data task packs (``unit`` documents: the 520-document
    file is split over two tasks, one reading from the middle of a row group), the windows
    are those of the file's own batches, as packed in this process."""
    from annealscale.anneal import packing
    from annealscale.anneal.packing import DOCS_PER_PACKING_BATCH, pack_documents, read_windows

    if unit is not None:
        monkeypatch.setattr(packing, "DOCS_PER_PACKING_UNIT", unit)

    common = dict(tokenizer_path=str(tokenizer_dir), seq_len=16)
    local = pack_documents(str(shards), cache_dir=tmp_path / "a", **common)
    remote = pack_documents(str(shards), cache_dir=tmp_path / "b", in_process_bytes=0, **common)
    ours, theirs = read_windows(local), read_windows(remote)
    assert len(ours) > 100
    np.testing.assert_array_equal(ours, theirs)
    # batches are cut per file: packing each file's 256-document batches on their own
    # gives exactly these windows (a batch spanning files would join two files' tails)
    texts = [pq.read_table(f).column("text").to_pylist() for f in sorted(shards.iterdir())]
    batches = [t[i : i + DOCS_PER_PACKING_BATCH] for t in texts for i in range(0, len(t), 256)]
    expected = np.concatenate([pack_texts(b, str(tokenizer_dir), 16) for b in batches])
    np.testing.assert_array_equal(ours, expected)
    # the tensor column reads back as (n, seq_len + 1) windows either way
    assert pq.read_schema(next(local.glob("*.parquet"))).field("tokens").type == (
        pq.read_schema(next(remote.glob("*.parquet"))).field("tokens").type
    )


@pytest.mark.parametrize("in_process_bytes", [8 * 2**20, 0])
def test_too_little_text_to_pack_is_a_clear_error_either_way(
    ray_local, tokenizer_dir, tmp_path, in_process_bytes
):
    from annealscale.anneal.packing import pack_documents

    docs = _parquet(tmp_path / "docs" / "part-0.parquet", text=["x = 1", "y"])
    with pytest.raises(AnnealscaleError, match="packing produced no windows of 65 tokens"):
        pack_documents(
            str(docs),
            tokenizer_path=str(tokenizer_dir),
            seq_len=64,
            cache_dir=tmp_path / "cache",
            in_process_bytes=in_process_bytes,
        )
    packed = tmp_path / "cache" / "packed"
    assert not packed.exists() or not list(packed.iterdir())  # nothing half-written left
