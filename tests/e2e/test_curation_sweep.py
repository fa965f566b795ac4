"""A user-defined source kind, registered in a few lines, used in a real sweep on a local
Ray; its curation ledger lands in results.parquet and matches the data."""

from __future__ import annotations

import sys

import pandas as pd
import pytest
from ray import cloudpickle

from annealscale.anneal.documents import read_texts
from annealscale.anneal.model import load_tokenizer
from annealscale.anneal.sources import SourceKind, register_source_kind
from annealscale.core.spec_model import SpecModel
from annealscale.tune.spec import parse_spec
from annealscale.tune.sweep import run_sweep
from tests.helpers import sweep_spec

pytestmark = pytest.mark.slow

USD_PER_DOC = 2.0**-10
SPEND = 48 * USD_PER_DOC  # buys exactly 48 documents


class EvenLengthParams(SpecModel):
    path: str
    usd_per_doc: float


@register_source_kind("even_length")
class EvenLength(SourceKind):
    """A plugin kind: documents priced each, keeping those of even length."""

    Params = EvenLengthParams

    def price_per_candidate(self):  # known before judging: exactly the spend's worth is judged
        return self.params.usd_per_doc

    def offers(self, start, stop):
        return {"text": self.read_input(self.params.path)[start:stop]}

    def judge(self, batch):
        texts = batch["text"]
        return {
            "text": texts,
            "cost_usd": [self.params.usd_per_doc] * len(texts),
            "kept": [len(t) % 2 == 0 for t in texts],
        }


# Ray actors import classes by module name; a test module is not importable there.
cloudpickle.register_pickle_by_value(sys.modules[__name__])


def spec(storage: str) -> dict:
    return sweep_spec(
        storage,
        name="plugin",
        sources=[
            {
                "name": "mine",
                "kind": "even_length",
                "params": {"path": "demo:math_train", "usd_per_doc": USD_PER_DOC},
                "resources": {"actors": 2, "batch_size": 16},
            }
        ],
        grid={"curation_spend": [SPEND], "train_tokens": [2048]},
        schedule={"peak_lr": 2e-3, "warmup_fraction": 0.1},
        train={"seq_len": 64, "batch_size": 16, "micro_batch_size": 16, "zero_stage": 1},
    )


def test_a_registered_plugin_kind_runs_in_a_sweep_with_its_ledger(ray_local, tiny_assets, tmp_path):
    outcome = run_sweep(
        parse_spec(spec(str(tmp_path / "storage"))), tmp_path / "out", resolve=tiny_assets.resolve
    )
    assert outcome.finished == 1 and outcome.failed == 0
    row = pd.read_parquet(tmp_path / "out" / "results.parquet").iloc[0]
    assert row["source"] == "mine" and row["status"] == "finished"

    bought = read_texts(tiny_assets.resolve("demo:math_train"))[:48]
    tokenizer = load_tokenizer(tiny_assets.resolve("demo:base"))
    n_tokens = [len(i) for i in tokenizer(bought, add_special_tokens=False)["input_ids"]]
    assert row["curation_docs_processed"] == 48
    assert row["curation_cost"] == SPEND
    assert row["curation_documents"] == sum(len(t) % 2 == 0 for t in bought)
    assert row["curation_tokens_processed"] == sum(n_tokens)
    assert row["curation_device_seconds"] > 0
    assert row["curation_flops"] == 0.0
    assert row["curation_skipped_records"] == 0
    assert row["curation_run_docs_processed"] == 48
    assert row["total_cost"] == pytest.approx(row["curation_cost"] + row["train_cost"])
