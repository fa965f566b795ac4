"""Restoring from a checkpoint on storage that is not the local filesystem: each rank
fetches the shared files and its own shards, never another rank's.

The remote storage is a real pyarrow filesystem that is not ``LocalFileSystem`` as the
anneal sees it (``SubTreeFileSystem`` over a temporary directory, or fsspec's in-memory
filesystem through ``PyFileSystem``), holding a real DeepSpeed ZeRO checkpoint written by
two ranks (real processes, gloo, bf16) for the slow test, and named files for the fast
ones.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pyarrow.fs as pafs
import pytest

from annealscale.anneal.checkpoint_restore import (
    fetched_for_rank,
    file_rank,
    files_for_rank,
    restored_directory,
)
from tests.helpers import moto_s3, save_tiny_llama

ZERO2_BF16 = [
    "latest",
    "zero_to_fp32.py",
    "state/mp_rank_00_model_states.pt",
    "state/bf16_zero_pp_rank_0_mp_rank_00_optim_states.pt",
    "state/bf16_zero_pp_rank_1_mp_rank_00_optim_states.pt",
    "worker-0.json",
    "worker-1.json",
    "rng-0.pt",
    "rng-1.pt",
    ".metadata.json",
]
"""A two-rank ZeRO-2 bf16 checkpoint as Ray Train merges it (`anneal.checkpoint`)."""


def test_each_rank_needs_the_shared_files_and_only_its_own():
    assert files_for_rank(ZERO2_BF16, 1, 2) == sorted(
        [
            ".metadata.json",
            "latest",
            "rng-1.pt",
            "state/bf16_zero_pp_rank_1_mp_rank_00_optim_states.pt",
            "state/mp_rank_00_model_states.pt",
            "worker-1.json",
            "zero_to_fp32.py",
        ]
    )
    zero3 = [
        "state/zero_pp_rank_0_mp_rank_00_model_states.pt",
        "state/zero_pp_rank_1_mp_rank_00_model_states.pt",
        "state/zero_pp_rank_0_mp_rank_00_optim_states.pt",
        "state/zero_pp_rank_1_mp_rank_00_optim_states.pt",
    ]
    assert files_for_rank(zero3, 0, 2) == [
        "state/zero_pp_rank_0_mp_rank_00_model_states.pt",
        "state/zero_pp_rank_0_mp_rank_00_optim_states.pt",
    ]
    # rank 1's files are not rank 10's, nor rank 0's
    assert file_rank("zero_pp_rank_10_mp_rank_00_optim_states.pt") == 10
    assert file_rank("worker-1.json") == 1 and file_rank("mp_rank_00_model_states.pt") is None


def test_a_checkpoint_written_by_another_world_size_is_fetched_whole():
    # DeepSpeed then names the mismatch itself; a partial fetch would hide it
    assert files_for_rank(ZERO2_BF16, 0, 4) == sorted(ZERO2_BF16)


def _subtree(root: Path):
    return pafs.SubTreeFileSystem(str(root), pafs.LocalFileSystem()), lambda: None


def _memory(_):
    fsspec = pytest.importorskip("fsspec")
    return pafs.PyFileSystem(pafs.FSSpecHandler(fsspec.filesystem("memory"))), lambda: None


def _s3(_):
    """A real pyarrow S3 filesystem on a bucket served by moto's S3-compatible server on
    loopback (no cloud is reachable here; the client code path is pyarrow's own)."""
    fs, _, stop = moto_s3("bucket")
    return fs, stop


def _write(fs: pafs.FileSystem, base: str, names: list[str]) -> None:
    for name in names:
        parent = f"{base}/{name}".rsplit("/", 1)[0]
        fs.create_dir(parent, recursive=True)
        with fs.open_output_stream(f"{base}/{name}") as out:
            out.write(name.encode())


def _local_files(directory: str) -> set[str]:
    """The checkpoint files under a restore directory (not its lock and user markers)."""
    root = Path(directory)
    return {
        str(p.relative_to(root))
        for p in root.rglob("*")
        if p.is_file() and p.relative_to(root).parts[0] not in {".users", ".locks"}
    }


@pytest.mark.parametrize("kind", ["subtree", "fsspec-memory", "s3"])
def test_ranks_of_one_node_share_the_download_and_the_last_one_out_deletes_it(tmp_path, kind):
    (tmp_path / "bucket").mkdir()
    make = {"subtree": _subtree, "fsspec-memory": _memory, "s3": _s3}[kind]
    fs, stop = make(tmp_path / "bucket")
    try:
        base = f"bucket/ckpt-{uuid.uuid4().hex}/step-00000016"
        _write(fs, base, ZERO2_BF16)
        local = tmp_path / "node"
        with fetched_for_rank(fs, base, rank=0, world_size=2, local_root=str(local)) as zero:
            assert set(zero.copied) == set(zero.files) == set(files_for_rank(ZERO2_BF16, 0, 2))
            with fetched_for_rank(fs, base, rank=1, world_size=2, local_root=str(local)) as one:
                assert one.directory == zero.directory
                # the shared files were already there: rank 1 downloaded only its own
                assert set(one.copied) == {
                    n for n in ZERO2_BF16 if file_rank(n.split("/")[-1]) == 1
                }
                assert _local_files(one.directory) == set(ZERO2_BF16)
                weights = Path(one.directory, "state/mp_rank_00_model_states.pt")
                assert weights.read_bytes() == b"state/mp_rank_00_model_states.pt"
            assert Path(zero.directory).is_dir()  # rank 0 still loading
        assert not Path(zero.directory).exists()
    finally:
        stop()


def test_a_local_checkpoint_is_used_in_place(tmp_path):
    from ray.train import Checkpoint

    checkpoint = Checkpoint.from_directory(str(tmp_path))
    with restored_directory(checkpoint, rank=1, world_size=2) as directory:
        assert directory == str(tmp_path)


WORLD = 2

WORKER = textwrap.dedent(
    """
    import hashlib, json, os, shutil, sys
    os.environ["DS_ACCELERATOR"] = "cpu"
    import torch, torch.distributed as dist
    args = json.loads(sys.argv[1])
    rank = int(os.environ["RANK"])
    dist.init_process_group("gloo", rank=rank, world_size=int(os.environ["WORLD_SIZE"]))
    torch.set_num_threads(1)
    import pyarrow.fs as pafs
    from ray.train import Checkpoint
    from annealscale.anneal.checkpoint import WorkerState, load, save
    from annealscale.anneal.checkpoint_restore import restored_directory
    from annealscale.anneal.engine import build_engine
    from annealscale.anneal.loop import AnnealJob
    from annealscale.anneal.run_spec import ScheduleSpec, TrainSpec

    def engine_for(stage):
        train = TrainSpec(seq_len=16, batch_size=8, micro_batch_size=2, zero_stage=stage,
                          precision="bf16")
        job = AnnealJob(model_path=args["model"], trust_remote_code=False, train=train,
                        schedule=ScheduleSpec(peak_lr=1e-2, warmup_fraction=0.0),
                        steps=4, domain_fraction=0.5, domain_pool_windows=1,
                        domain_eval_dir="", general_eval_dir="", eval_windows=0,
                        token_bytes_path="", seed=0, num_workers=2, threads_per_worker=1)
        return build_engine(job, world_size=2, use_gpu=False)

    def fingerprint(engine):
        # this rank's weights (its ZeRO-3 partition, else all) and its optimizer shard: the
        # fp32 master partition DeepSpeed's wrapper hands the torch optimizer, and its state
        tensors = [p.ds_tensor if getattr(p, "ds_tensor", None) is not None else p.data
                   for p in engine.module.parameters()]
        inner = engine.optimizer.optimizer
        for group in inner.param_groups:
            tensors += list(group["params"])
        for state in inner.state.values():
            tensors += [v for _, v in sorted(state.items()) if torch.is_tensor(v)]
        digest = hashlib.sha256()
        for tensor in tensors:
            digest.update(tensor.detach().float().contiguous().numpy().tobytes())
        return digest.hexdigest()

    def run(stage):
        name = f"zero{stage}"
        torch.manual_seed(0)
        built = engine_for(stage)
        engine = built.engine
        g = torch.Generator().manual_seed(1234)
        for micro in range(built.accumulation):
            batch = torch.randint(0, 97, (2, 2, 17), generator=g)[rank]
            engine.backward(engine(batch[:, :-1], batch[:, 1:]))
            engine.step()
        saved = fingerprint(engine)
        # every rank's files merged into one directory of the "bucket", as Ray Train does
        local = save(engine, WorkerState(step=1, domain_rows=3, replay_rows=5), rank)
        shutil.copytree(local, os.path.join(args["bucket"], name), dirs_exist_ok=True)
        shutil.rmtree(local)
        dist.barrier()
        del engine, built

        fresh = engine_for(stage).engine
        before = fingerprint(fresh)
        remote = pafs.SubTreeFileSystem(args["bucket"], pafs.LocalFileSystem())
        checkpoint = Checkpoint(path=name, filesystem=remote)
        local_root = os.path.join(args["local"], f"rank{rank}")
        with restored_directory(checkpoint, rank=rank, world_size=2,
                                local_root=local_root) as directory:
            files = sorted(
                os.path.relpath(os.path.join(d, f), directory)
                for d, _, names in os.walk(directory) for f in names
                if os.path.relpath(d, directory).split(os.sep)[0] not in (".users", ".locks")
            )
            state = load(fresh, directory, rank, restore_rng=True)
        return {"files": files, "saved": saved, "before": before, "loaded": fingerprint(fresh),
                "state": state.__dict__, "left": os.listdir(local_root),
                "remote": not isinstance(checkpoint.filesystem, pafs.LocalFileSystem)}

    result = {str(stage): run(stage) for stage in (2, 3)}
    print(f"RESULT{rank} " + json.dumps(result), flush=True)
    dist.barrier()
    dist.destroy_process_group()
    """
)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    return save_tiny_llama(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="module")
def restores(tiny_model, tmp_path_factory):
    """Two ranks save a ZeRO-2 and a ZeRO-3 checkpoint into the "bucket", then restore each
    into a fresh engine through `restored_directory`, each rank into its own local root."""
    bucket = tmp_path_factory.mktemp("bucket")
    local = tmp_path_factory.mktemp("local")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    args = json.dumps({"model": tiny_model, "bucket": str(bucket), "local": str(local)})
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, args],
            env={
                **os.environ,
                "RANK": str(rank),
                "LOCAL_RANK": str(rank),
                "WORLD_SIZE": str(WORLD),
                "MASTER_ADDR": "127.0.0.1",
                "MASTER_PORT": str(port),
            },
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for rank in range(WORLD)
    ]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=840)
        assert proc.returncode == 0, err[-3000:]
        line = [x for x in out.splitlines() if x.startswith("RESULT")][-1]
        results.append(json.loads(line.split(" ", 1)[1]))
    return bucket, results


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["2", "3"])
def test_each_rank_restores_its_own_zero_shards_from_remote_storage(restores, stage):
    bucket, results = restores
    root = bucket / f"zero{stage}"
    written = {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}
    fetched = []
    for rank, result in enumerate(results):
        got = result[stage]
        assert got["remote"]  # the anneal saw storage that is not the local filesystem
        files = set(got["files"])
        other = 1 - rank
        # its own optimizer shard and rank files, never the other rank's
        assert f"worker-{rank}.json" in files and f"rng-{rank}.pt" in files
        assert f"worker-{other}.json" not in files and f"rng-{other}.pt" not in files
        own = {f for f in files if f"zero_pp_rank_{rank}_" in f}
        assert not {f for f in files if f"zero_pp_rank_{other}_" in f}
        assert any(f.endswith("optim_states.pt") for f in own), files
        if stage == "3":  # ZeRO-3: each rank's own weights partition too
            assert f"state/zero_pp_rank_{rank}_mp_rank_00_model_states.pt" in files
        else:  # ZeRO-2: one weights file every rank reads
            assert "state/mp_rank_00_model_states.pt" in files
        assert files < written
        fetched.append(files)
        # the loaded state is the saved one (and the fresh engine's was not)
        assert got["loaded"] == got["saved"] != got["before"]
        assert got["state"]["step"] == 1 and got["state"]["domain_rows"] == 3
        assert got["left"] == []  # the local copy went with the context
    # together the ranks fetched the whole checkpoint, and shared only the shared files
    assert fetched[0] | fetched[1] == written
    assert all(file_rank(Path(f).name) is None for f in fetched[0] & fetched[1])


def test_staging_left_by_a_killed_worker_is_removed_and_a_live_one_kept(tmp_path):
    from annealscale.anneal.checkpoint import STAGING_PREFIX, remove_stale_staging
    from tests.helpers import exited_pid

    dead_pid = exited_pid()
    stale = tmp_path / f"{STAGING_PREFIX}{dead_pid}-4-abc123"
    live = tmp_path / f"{STAGING_PREFIX}{os.getpid()}-8-def456"
    old_name = tmp_path / f"{STAGING_PREFIX}3-x1y2z3"  # before the pid was in the name
    other = tmp_path / "unrelated"
    for path in (stale, live, old_name, other):
        (path / "state").mkdir(parents=True)
        (path / "state" / "shard.pt").write_bytes(b"x")
    assert remove_stale_staging(tmp_path) == [stale]
    assert not stale.exists()
    assert live.exists() and old_name.exists() and other.exists()
