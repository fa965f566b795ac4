"""Everything a sweep does before the first anneal: resolve paths, curate pools, pack
data with Ray Data, measure the base model. The product is one `CellPlan` per cell.

Curation and packing are cached under the storage path by content, so a second sweep
over the same sources (or a resumed one) reuses them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from annealscale.anneal.documents import as_parquet, files_identity, is_uri
from annealscale.anneal.flops import eval_flops, train_flops
from annealscale.anneal.harness import suite_identity, suite_provenance
from annealscale.anneal.loop import AnnealJob
from annealscale.anneal.mixture import domain_counts
from annealscale.anneal.model import (
    checkpoint_location,
    load_model_config,
    load_tokenizer,
    token_byte_lengths,
)
from annealscale.anneal.packing import count_windows, pack_documents, read_windows
from annealscale.anneal.sources import CurationContext, curate
from annealscale.core.errors import AnnealscaleError
from annealscale.core.hashing import content_hash, to_plain
from annealscale.core.units import flops_to_usd
from annealscale.tune.base_measurement import measure_base
from annealscale.tune.cells import Cell
from annealscale.tune.engine_inputs import (
    check_deepspeed,
    check_tasks,
    evaluation_steps,
    task_suite,
)
from annealscale.tune.plans import CellPlan, InputsIdentity, SweepPlan
from annealscale.tune.spec import ExperimentSpec
from annealscale.tune.spec_paths import check_paths

log = logging.getLogger(__name__)


def inputs_identity(spec: ExperimentSpec, resolve: Callable[[str], str]) -> InputsIdentity:
    """Resolve every path of ``spec`` (building demo assets if needed) and identify the files.

    Local paths are checked first (`tune.spec_paths.check_paths`), so a missing file or an
    empty model folder is reported naming its spec field, from the CLI and the API alike.
    """
    check_paths(spec)

    def identify(path: str) -> str:
        resolved = resolve(path)
        local = Path(resolved.split("#", 1)[0]).expanduser()  # DIR#split of a saved dataset
        known = local.exists() or "*" in resolved or is_uri(resolved)
        return files_identity(resolved) if known else resolved

    def contents(path: str) -> str:
        # DeepSpeed files are small and read whole: their bytes are their identity (an edit
        # that keeps size and time, or a copy elsewhere, is still seen right).
        resolved = resolve(path)
        local = Path(resolved).expanduser()
        if local.is_file():
            return hashlib.sha256(local.read_bytes()).hexdigest()
        return identify(path)

    files = [
        identify(spec.base_model.path),
        identify(spec.replay.path),
        identify(spec.eval.domain.path),
        identify(spec.eval.general.path),
    ]
    # evaluation tasks (harness version, task configs, JSONL tasks and data by their bytes),
    # when there are any
    tasks = suite_identity(task_suite(spec, resolve))
    if tasks:
        files.append({"tasks": tasks})
    if spec.train.deepspeed_config:
        files.append({"deepspeed_config": contents(spec.train.deepspeed_config)})
    shared = content_hash(files)
    per_source = {}
    for source in spec.sources:
        paths = {
            name: identify(value)
            for name, value in sorted(to_plain(source.params).items())
            if isinstance(value, str) and (name == "path" or name.endswith("_path"))
        }
        per_source[source.name] = content_hash(paths)
    return InputsIdentity(shared=shared, per_source=per_source)


def prepare(
    spec: ExperimentSpec,
    *,
    resolve: Callable[[str], str],
    storage: Path,
    threads: int,
    cells: list[Cell],
    inputs: InputsIdentity,
) -> SweepPlan:
    """Curate, pack and plan ``cells`` of ``spec``."""
    storage = Path(storage)
    cache = storage / "cache"
    deepspeed_user = check_deepspeed(spec, resolve)
    suite = task_suite(spec, resolve, cache)
    check_tasks(suite)
    model_path = checkpoint_location(resolve(spec.base_model.path))
    tokenizer = load_tokenizer(model_path, trust_remote_code=spec.base_model.trust_remote_code)
    seq_len = spec.train.seq_len

    positions = getattr(
        load_model_config(model_path, spec.base_model.trust_remote_code),
        "max_position_embeddings",
        None,
    )
    if positions is not None and seq_len > positions:
        raise AnnealscaleError(
            f"train.seq_len: {seq_len} tokens exceeds the base model's context of {positions}; "
            "lower train.seq_len"
        )
    token_bytes = token_byte_lengths(model_path, spec.base_model.trust_remote_code)
    token_bytes_path = cache / f"token-bytes-{content_hash(token_bytes.tolist())}.npy"
    if not token_bytes_path.exists():
        token_bytes_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = token_bytes_path.with_name(f".{token_bytes_path.stem}.{os.getpid()}.npy")
        np.save(tmp, token_bytes)
        os.replace(tmp, token_bytes_path)

    def packed(path: str, text_field: str) -> str:
        docs = as_parquet(resolve(path), text_field, cache)
        return str(
            pack_documents(
                docs, tokenizer_path=model_path, seq_len=seq_len, cache_dir=cache, text_field="text"
            )
        )

    log.info("packing replay and evaluation data (Ray Data)")
    replay_dir = packed(spec.replay.path, spec.replay.text_field)
    eval_dirs = {
        "domain": packed(spec.eval.domain.path, spec.eval.domain.text_field),
        "general": packed(spec.eval.general.path, spec.eval.general.text_field),
    }
    # at least one window per worker: every rank evaluates an equal share (ZeRO-3 gathers
    # parameters collectively), and a rank with none would leave the metric empty (NaN)
    eval_windows = max(spec.resources.num_workers, spec.eval.max_tokens // seq_len)

    import torch

    torch.set_num_threads(threads)  # the base model's evaluation and in-process curation
    windows = {}
    eval_set_tokens = 0
    for name, path in eval_dirs.items():
        windows[name] = read_windows(Path(path), eval_windows)
        usable = len(windows[name]) - len(windows[name]) % spec.resources.num_workers
        if usable == 0:
            raise AnnealscaleError(
                f"eval.{name}.path: {getattr(spec.eval, name).path} packs into "
                f"{len(windows[name])} window(s) of {seq_len} tokens, fewer than "
                f"resources.num_workers ({spec.resources.num_workers}); give it more "
                "held-out documents"
            )
        eval_set_tokens += usable * seq_len
    base_model = measure_base(
        model_path=model_path,
        trust_remote_code=spec.base_model.trust_remote_code,
        tokenizer=tokenizer,
        windows=windows,
        token_bytes=token_bytes,
        suite=suite,
        cache_dir=cache,
        model_identity=inputs.shared,
    )
    base = base_model.metrics
    shape = base_model.shape
    suite = dataclasses.replace(suite, columns=base_model.task_columns)
    log.info("base model: domain %.4f bpb, general %.4f bpb", base["domain"], base["general"])
    task_tokens = base_model.task_tokens
    harness_provenance = suite_provenance(suite) if not suite.empty else None

    ctx = CurationContext(
        tokenizer=tokenizer, resolve=resolve, cache_dir=cache / model_key(model_path)
    )
    sources = {s.name: s for s in spec.sources}
    pools: dict[tuple[str, float], tuple | AnnealscaleError] = {}
    # largest spend first: one curation job judges a source's stream, smaller spends cut it
    for cell in sorted(cells, key=lambda c: -c.curation_spend):
        key = (cell.source, cell.curation_spend)
        if key not in pools:
            log.info("curating %s at %g USD", cell.source, cell.curation_spend)
            try:
                pool = curate(
                    sources[cell.source],
                    cell.curation_spend,
                    ctx,
                    inputs=inputs.per_source[cell.source],
                )
                pool_dir = pack_documents(
                    str(pool.path), tokenizer_path=model_path, seq_len=seq_len, cache_dir=cache
                )
                pools[key] = (pool, str(pool_dir), count_windows(pool_dir))
            except AnnealscaleError as err:
                # One source failing (no documents kept, too few tokens to pack) must not
                # stop the others: its cells are recorded as failed with this message.
                log.warning("source %s at %g USD: %s", cell.source, cell.curation_spend, err)
                pools[key] = err

    execution = execution_settings(spec, model_path)
    plans = []
    failed = {}
    per_step = spec.train.tokens_per_step
    for cell in cells:
        prepared = pools[(cell.source, cell.curation_spend)]
        if isinstance(prepared, AnnealscaleError):
            failed[cell.identity] = str(prepared)
            continue
        pool, pool_dir, pool_windows = prepared
        steps = cell.train_tokens // per_step
        tokens = steps * per_step
        job = AnnealJob(
            model_path=model_path,
            trust_remote_code=spec.base_model.trust_remote_code,
            train=spec.train,
            schedule=spec.schedule,
            steps=steps,
            domain_fraction=spec.domain_fraction,
            domain_pool_windows=pool_windows,
            domain_eval_dir=eval_dirs["domain"],
            general_eval_dir=eval_dirs["general"],
            eval_windows=eval_windows,
            token_bytes_path=str(token_bytes_path),
            seed=cell.seed,
            num_workers=spec.resources.num_workers,
            threads_per_worker=spec.resources.cpus_per_worker,
            deepspeed_user_config=deepspeed_user,
            eval_every_steps=spec.eval.every_steps,
            tasks=suite,
            **execution,
        )
        evaluations = 1 + len(evaluation_steps(steps, spec.eval.every_steps))
        t_flops = train_flops(shape, tokens, seq_len)
        e_flops = eval_flops(shape, evaluations * eval_set_tokens + task_tokens, seq_len)
        train_cost = flops_to_usd(t_flops + e_flops, spec.prices.usd_per_pflop)
        row = {
            "cell_id": cell.identity,
            "source": cell.source,
            "source_identity": cell.source_identity,
            "curation_spend": cell.curation_spend,
            "requested_train_tokens": cell.train_tokens,
            "train_tokens": tokens,
            "seed": cell.seed,
            "unique_tokens": pool_windows * seq_len,
            "pool_documents": pool.documents,
            **{k: float(v) for k, v in pool.ledger().items()},
            "repetition": spec.domain_fraction * tokens / max(pool_windows * seq_len, 1),
            "model_params": shape.non_embedding_params,
            "train_flops": t_flops,
            "eval_flops": e_flops,
            "train_cost": train_cost,
            "total_cost": pool.cost_usd + train_cost,
            "base_domain_bpb": base["domain"],
            "base_general_bpb": base["general"],
            **{f"base_{k}": v for k, v in base.items() if k not in ("domain", "general")},
            "eval_harness": harness_provenance,
        }
        plans.append(
            CellPlan(
                cell=cell,
                job=job,
                domain_dir=pool_dir,
                replay_dir=replay_dir,
                # one batch of slack: workers' shares of a split need not be equal
                replay_rows=steps * spec.train.batch_size
                - int(domain_counts(1, steps * spec.train.batch_size, spec.domain_fraction).sum())
                + spec.train.batch_size,
                row=row,
            )
        )
    return SweepPlan(cells=plans, failed=failed)


def model_key(model_path: str) -> str:
    """Pools are counted in the base tokenizer's tokens, so their cache is per model."""
    return "model-" + content_hash(model_path)


def execution_settings(spec: ExperimentSpec, model_path: str) -> dict:
    """How the workers run, beyond the spec's train section: whether they must find CUDA
    (GPUs reserved, not logical GPUs under gloo), activation checkpointing as asked for or,
    when left unset, as the memory plan needs it, and the device's peak FLOP/s for MFU."""
    from annealscale.anneal import memory_plan

    res = spec.resources
    checkpointing = bool(spec.train.activation_checkpointing)
    memory = memory_plan.gpu_memory_bytes(res.gpu_kind, res.gpu_memory_gib)
    if spec.train.activation_checkpointing is None and res.gpus_per_worker and memory:
        config = load_model_config(model_path, spec.base_model.trust_remote_code)
        setup = memory_plan.spec_setup(
            spec.train,
            gpus=res.num_workers * res.gpus_per_worker,
            gpu_memory_bytes=memory,
            gpus_per_node=res.gpus_per_node,
            dims=memory_plan.model_dims(
                config, trust_remote_code=spec.base_model.trust_remote_code
            ),
        )
        checkpointing = setup.activation_checkpointing
    peak = memory_plan.peak_flops(res.gpu_kind, res.peak_flops) if res.gpus_per_worker else None
    return {
        "expect_cuda": res.gpus_per_worker > 0 and res.torch_backend != "gloo",
        "activation_checkpointing": checkpointing,
        "peak_flops": float(peak or 0.0),
    }
