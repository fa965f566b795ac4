"""The results store on an S3 bucket, through pyarrow's S3 filesystem and an ``s3://`` URI.

No cloud is reachable here: the bucket is served by moto's S3-compatible server on
loopback (a stand-in for AWS S3 only; the client code path is pyarrow's real one).
"""

from __future__ import annotations

import pyarrow.fs as pafs
import pytest

from annealscale.tune.results import ResultsStore
from annealscale.tune.storage import StorageLayout
from tests.helpers import moto_s3

pytest.importorskip("moto.server", reason="dev extra: moto[server]")


@pytest.fixture(scope="module")
def bucket_uri(tmp_path_factory):
    fs, port, stop = moto_s3("sweeps")
    mp = pytest.MonkeyPatch()
    mp.setenv("AWS_ACCESS_KEY_ID", "test")
    mp.setenv("AWS_SECRET_ACCESS_KEY", "test")
    mp.setenv("AWS_DEFAULT_REGION", "us-east-1")
    query = f"?endpoint_override=127.0.0.1:{port}&scheme=http&region=us-east-1"
    yield "s3://sweeps/demo", query, fs
    mp.undo()
    stop()


def _row(identity: str, status: str, **extra) -> dict:
    return {
        "cell_id": identity,
        "source": "s",
        "curation_spend": 0.1,
        "train_tokens": 4096,
        "seed": 0,
        "curation_cost": 0.05,
        "train_flops": 1e15,
        "eval_flops": 0.0,
        "domain_bpb": 1.0,
        "status": status,
        "attempts": 1,
        **extra,
    }


def test_rows_round_trip_through_an_s3_bucket(bucket_uri, tmp_path):
    root, query, fs = bucket_uri
    layout = StorageLayout.of(root)
    store = ResultsStore(layout.results + query)
    store.write_row(_row("a", "finished"))
    store.write_row(_row("a", "finished", domain_bpb=9.0))  # never replaces a finished row
    store.write_row(_row("b", "failed", attempts=2))
    keys = {i.path for i in fs.get_file_info(pafs.FileSelector("sweeps/demo", recursive=True))}
    assert {"sweeps/demo/results/cells/a.parquet", "sweeps/demo/results/failed/b.parquet"} <= keys

    again = ResultsStore(layout.results + query)  # a later sweep, a fresh client
    assert again.finished_ids() == {"a"}
    assert again.failed_attempts({"a", "b"}) == {"b": 2}
    _, table = again.consolidate({"a", "b"}, out_dir=tmp_path, usd_per_pflop=1.0)
    assert table.set_index("cell_id").loc["a", "domain_bpb"] == 1.0
    assert len(table) == 2
