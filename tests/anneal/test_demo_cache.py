"""The demo's asset cache under concurrency and interruption: two processes building one
cache at the same moment both finish with one copy; a killed base pre-training continues
from its last saved step; a stale build folder is cleaned. Real processes, real files,
the tiny assets (the demo's own code path at a smaller size)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

BUILD = """
import logging, sys
logging.basicConfig(level=logging.INFO, stream=sys.stdout)
from pathlib import Path
from annealscale.anneal.demo import DemoAssets
assets = DemoAssets.tiny(Path(sys.argv[1]))
base = assets.resolve("demo:base")
print("BASE", base, assets.resolve("demo:math_train"), flush=True)
"""

PRETRAIN = """
import sys
from pathlib import Path
from annealscale.anneal.base_model import build_base_model
from annealscale.anneal.demo import DemoAssets
assets = DemoAssets.tiny(Path(sys.argv[1]))
general = str(assets.corpus().split("general_train"))
build_base_model(general, assets.cache_dir, assets.base_config, checkpoint_steps=2)
"""


def _env() -> dict:
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    return env


def _start(script: str, cache: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", script, str(cache)],
        env=_env(),
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


@pytest.mark.slow
def test_two_demos_building_one_cache_at_once_both_finish_with_one_copy(tmp_path):
    cache = tmp_path / "cache"
    runs = [_start(BUILD, cache) for _ in range(2)]
    outputs = [run.communicate(timeout=600)[0] for run in runs]
    assert [run.returncode for run in runs] == [0, 0], "\n".join(o[-2000:] for o in outputs)
    paths = [next(ln for ln in o.splitlines() if ln.startswith("BASE")) for o in outputs]
    assert paths[0] == paths[1]
    # one of them pre-trained; the other waited for it and found the model built
    assert sum("parameters, pre-training on" in o for o in outputs) == 1
    assert not list(cache.glob("*.tmp"))
    assert len(list(cache.glob("base-*/annealscale_base.json"))) == 1


@pytest.mark.slow
def test_a_killed_base_pretraining_continues_from_its_last_state(tmp_path, tiny_assets):
    from annealscale.anneal.base_model import STATE, build_base_model
    from annealscale.anneal.demo import DemoAssets

    cache = tmp_path / "cache"
    run = _start(PRETRAIN, cache)
    deadline = time.time() + 600
    try:
        while not list(cache.glob(f"base-*.tmp/{STATE}")):
            assert run.poll() is None, run.communicate()[0][-2000:]
            assert time.time() < deadline, "no pre-training state was saved in time"
            time.sleep(0.05)
        time.sleep(0.5)  # a few more steps, so the kill lands mid-training
    finally:
        run.send_signal(signal.SIGKILL)
        run.communicate()
    assert list(cache.glob(f"base-*.tmp/{STATE}"))

    assets = DemoAssets.tiny(cache)
    general = str(assets.corpus().split("general_train"))
    out = build_base_model(general, cache, assets.base_config)
    meta = json.loads((out / "annealscale_base.json").read_text())
    assert meta["resumed_from_step"] >= 2
    assert not list(cache.glob("*.tmp"))
    # the same model an uninterrupted build made (same data order, same optimizer state)
    reference = json.loads((tiny_assets.base_model() / "annealscale_base.json").read_text())
    assert reference["resumed_from_step"] == 0
    assert meta["final_train_loss"] == pytest.approx(reference["final_train_loss"], rel=1e-3)


def test_a_stale_build_folder_is_cleaned_and_the_corpus_built(tmp_path):
    from annealscale.anneal.demo_corpus import DemoCorpusConfig, build_demo_corpus

    config = DemoCorpusConfig(
        math_packages=("mpmath",), general_packages=("json",), max_docs_per_package=30
    )
    name = build_demo_corpus(tmp_path / "first", config).root.name
    stale = tmp_path / "second" / f"{name}.tmp"
    stale.mkdir(parents=True)
    (stale / "math_train.parquet").write_text("torn write of an interrupted run")
    corpus = build_demo_corpus(tmp_path / "second", config)
    assert corpus.root.name == name and corpus.manifest["splits"]["math_train"]["documents"]
    assert not stale.exists()
