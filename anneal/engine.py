"""Engine setup inside a Ray Train worker: threads, device, model, optimizer, schedule and
the DeepSpeed engine, all from the `AnnealJob`.

CPU workers train in fp32 (or bf16 when asked for) over gloo with as many PyTorch threads
as CPUs reserved; GPU workers train in bf16 over nccl (Ray Train's `TorchConfig` picks the backend, see
`tune.trial`) on the GPU Ray Train assigned them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from annealscale.anneal.deepspeed_config import build_optimizer, deepspeed_config, uses_bf16
from annealscale.anneal.schedule import lr_multiplier


@dataclass
class Engine:
    """What the training loop steps: the DeepSpeed engine and where its batches go."""

    engine: object
    """`deepspeed.DeepSpeedEngine`; ``engine.module`` is the `anneal.loss.LossModel`
    around the Hugging Face model (``engine.module.lm``): called with ``input_ids`` and
    ``targets`` it returns the mean chunked loss."""
    device: object
    """`torch.device` of this worker's batches."""
    accumulation: int
    """Micro-batches per optimizer step on this worker."""
    config: dict
    """The DeepSpeed configuration it was built with."""


def prepare_threads(threads: int, *, expect_cuda: bool = False) -> bool:
    """Set up PyTorch for this worker before DeepSpeed is imported; True when on a GPU.

    DeepSpeed picks its accelerator when first imported, so ``DS_ACCELERATOR`` must be set
    before that on CPU workers. A worker that was given GPUs (``expect_cuda``) and cannot
    use CUDA stops here with one line, instead of training on the CPU in fp32 unnoticed.
    """
    import torch

    use_gpu = torch.cuda.is_available()
    if expect_cuda and not use_gpu:
        raise RuntimeError(wrong_device_message())
    if not use_gpu:
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
        torch.set_num_threads(threads)
    return use_gpu


def wrong_device_message() -> str:
    """One line naming the node, the devices it was given and the torch build."""
    import socket

    import torch

    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "<unset>")
    build = f"torch {torch.__version__}, CUDA {torch.version.cuda or 'none (CPU-only build)'}"
    return (
        f"worker on node {socket.gethostname()} was given GPUs (CUDA_VISIBLE_DEVICES="
        f"{visible}) but cannot use CUDA ({build}, {torch.cuda.device_count()} devices "
        "seen); install a CUDA build of torch on the GPU nodes, or set "
        "resources.torch_backend: gloo for logical GPUs on CPU nodes"
    )


def skip_shm_comm_op(deepspeed) -> None:
    """Keep DeepSpeed from JIT-compiling its shared-memory all-reduce op on CPU workers.

    The op only speeds up CPU inference collectives; training here talks over gloo. Its
    build (tens of seconds, under ``~/.cache/torch_extensions``) ran on first use on every
    fresh machine, and a build killed midway left a lock file on which every later
    DeepSpeed start waited forever.
    """
    deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False


def build_engine(job, *, world_size: int, use_gpu: bool) -> Engine:
    """Load the base model and wrap it in DeepSpeed as the job's train section says."""
    import deepspeed
    import torch

    from annealscale.anneal.loss import LossModel

    if use_gpu:
        device = torch.device("cuda", torch.cuda.current_device())
    else:
        device = torch.device("cpu")
        skip_shm_comm_op(deepspeed)
    bf16 = uses_bf16(job.train, use_gpu=use_gpu)
    peak_lr = job.schedule.peak_lr
    config = deepspeed_config(
        job.train,
        world_size=world_size,
        bf16=bf16,
        user=job.deepspeed_user_config,
        source=job.train.deepspeed_config or "train.deepspeed_config",
        peak_lr=peak_lr,
    )
    model = _load(job, config, bf16=bf16)
    if job.activation_checkpointing:
        model.config.use_cache = False
        model.activation_checkpointing_enable({"use_reentrant": False})
    wrapped = LossModel(model)
    optimizer = None
    if "optimizer" not in config:
        optimizer = build_optimizer(job.train, model.parameters(), peak_lr=peak_lr)

    def schedule(opt):
        return torch.optim.lr_scheduler.LambdaLR(
            opt, lambda step: lr_multiplier(job.schedule, step, job.steps, trunk=job.trunk)
        )

    engine, _, _, _ = deepspeed.initialize(
        model=wrapped,
        model_parameters=[p for p in wrapped.parameters() if p.requires_grad],
        optimizer=optimizer,
        lr_scheduler=schedule,
        config=config,
        dist_init_required=False,
    )
    return Engine(
        engine=engine,
        device=device,
        accumulation=config["gradient_accumulation_steps"],
        config=config,
    )


def _load(job, config: dict, *, bf16: bool):
    """The Hugging Face model in the precision it trains in.

    Under ZeRO-3 it is loaded straight into each rank's partitions
    (`anneal.zero3_load`), so no rank holds the whole model. ``dtype`` is explicit so
    that ``precision: fp32`` trains a bf16 checkpoint in fp32 (Transformers 5 otherwise
    keeps the checkpoint's dtype).
    """
    import torch

    from annealscale.anneal.model import load_model
    from annealscale.anneal.zero3_load import load_partitioned

    dtype = torch.bfloat16 if bf16 else torch.float32
    if config["zero_optimization"].get("stage", 0) == 3 and Path(job.model_path).is_dir():
        model = load_partitioned(
            job.model_path, config, dtype=dtype, trust_remote_code=job.trust_remote_code
        )
        if model is not None:
            return model
    return load_model(job.model_path, trust_remote_code=job.trust_remote_code, dtype=dtype)
