"""Per-GPU memory of one anneal, planned from the model's configuration before any GPU is
booked: pure arithmetic, no weights.

Model states follow the ZeRO paper (Rajbhandari et al. 2020, section 3.1): mixed-precision
Adam holds 2 bytes of 16-bit weights, 2 bytes of 16-bit gradients and 12 bytes of fp32
master weights and moments per parameter, 16 bytes in all; fp32 Adam holds 4 + 4 + 8, also
16. ZeRO-1 partitions the optimizer states over the data-parallel GPUs, ZeRO-2 also the
gradients, ZeRO-3 also the weights (plus the layers gathered while they compute).
Optimizer offload moves the optimizer states (and, with them, the fp32 master copy) to host
memory. ZeRO-2 and ZeRO-3 also allocate a gradient reduce bucket up front (DeepSpeed's
``reduce_bucket_size``, 5e8 elements by default: 1 GB in bf16). Activations are counted per layer from what a Llama-style decoder layer saves for
its backward pass (Korthikanti et al. 2022, section 4.1, adapted to gated MLPs, grouped
KV heads and fused attention, which saves no ``seq x seq`` scores); with activation
checkpointing only each layer's input is kept, plus one layer recomputed at a time. Logits
are computed in sequence chunks (`anneal.loss`), so only one chunk's fp32 logits live at a
time. A fixed framework margin covers the CUDA context, NCCL buffers and fragmentation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

GIB = 2**30

FRAMEWORK_MARGIN_BYTES = 3 * GIB
"""CUDA context, NCCL/communication buffers and allocator fragmentation (bytes per GPU)."""

STAGE3_LIVE_LAYERS = 2
"""Decoder layers whose 16-bit weights ZeRO-3 holds gathered at once (compute + prefetch)."""

LOSS_CHUNK_TOKENS = 1024
"""Tokens per chunk of the chunked cross-entropy (`anneal.loss`)."""

GPU_KINDS = {
    # name: (memory GiB, dense bf16 peak FLOP/s), from the vendors' data sheets
    "a100-40gb": (40, 312e12),
    "a100-80gb": (80, 312e12),
    "h100-80gb": (80, 989e12),
    "h100-sxm": (80, 989e12),
    "h100-pcie": (80, 756e12),
    "h200": (141, 989e12),
    "b200": (180, 2250e12),
    "l40s": (48, 362e12),
    "a10g": (24, 125e12),
}
"""Device kinds by name: memory (GiB) and dense bf16 peak (FLOP/s, no sparsity)."""


@dataclass(frozen=True, kw_only=True)
class ModelDims:
    """What the planner needs to know about a decoder-only model."""

    params: int
    """All parameters (count), embeddings included."""
    n_layer: int
    d_model: int
    d_ff: int
    """MLP inner width."""
    n_heads: int
    n_kv_heads: int
    vocab_size: int
    gated_mlp: bool = True
    """SwiGLU-style MLP (gate and up projections), as in Llama, Qwen and OLMo."""

    @property
    def layer_params(self) -> int:
        """Parameters of one decoder layer (count), for ZeRO-3's gathered layers."""
        kv = self.d_model * self.n_kv_heads // self.n_heads
        attention = 2 * self.d_model * self.d_model + 2 * self.d_model * kv
        mlp = (3 if self.gated_mlp else 2) * self.d_model * self.d_ff
        return attention + mlp


@dataclass(frozen=True, kw_only=True)
class TrainSetup:
    """How one anneal trains, as far as memory goes."""

    zero_stage: int
    bf16: bool
    micro_batch_size: int
    """Sequences per GPU per forward pass."""
    seq_len: int
    """Tokens per sequence."""
    activation_checkpointing: bool
    offload_optimizer: bool
    gpus: int
    """Data-parallel GPUs sharing the ZeRO partitions (workers x GPUs per worker)."""
    gpu_memory_bytes: int
    gpus_per_node: int = 8
    """GPUs in one node, to say how many nodes a cell needs."""
    reduce_bucket_elements: int = 500_000_000
    """DeepSpeed's ``zero_optimization.reduce_bucket_size`` (its default): under ZeRO-2
    and ZeRO-3 a gradient bucket of this many elements is allocated up front."""


@dataclass(frozen=True, kw_only=True)
class MemoryPlan:
    """Estimated bytes per GPU, by part."""

    setup: TrainSetup
    parameters: float
    gradients: float
    optimizer: float
    activations: float
    logits: float
    buffers: float
    """DeepSpeed's gradient reduce bucket (bytes)."""
    margin: float

    @property
    def total(self) -> float:
        return (
            self.parameters
            + self.gradients
            + self.optimizer
            + self.activations
            + self.logits
            + self.buffers
            + self.margin
        )

    @property
    def fits(self) -> bool:
        return self.total <= self.setup.gpu_memory_bytes

    def line(self) -> str:
        """One line: the parts and the total against the GPU's memory, in GiB."""
        parts = ", ".join(
            f"{name} {value / GIB:.1f}"
            for name, value in (
                ("params", self.parameters),
                ("grads", self.gradients),
                ("optimizer", self.optimizer),
                ("activations", self.activations),
                ("logits", self.logits),
                ("buffers", self.buffers),
                ("margin", self.margin),
            )
        )
        verdict = "fits" if self.fits else "does not fit"
        return (
            f"{self.total / GIB:.1f} GiB per GPU of {self.setup.gpu_memory_bytes / GIB:.0f} "
            f"({verdict}; {parts})"
        )


def model_state_bytes(params: int, setup: TrainSetup) -> tuple[float, float, float]:
    """Parameter, gradient and optimizer-state bytes per GPU for ``params`` parameters.

    Sums to 16 bytes per parameter over all GPUs (before offload) whatever the stage:
    the stage only decides which parts are divided by the number of GPUs.
    """
    n = setup.gpus
    weight, grad = (2.0, 2.0) if setup.bf16 else (4.0, 4.0)
    states = 16.0 - weight - grad  # fp32 master + Adam moments (12), or moments only (8)
    parameters = params * weight / (n if setup.zero_stage >= 3 else 1)
    gradients = params * grad / (n if setup.zero_stage >= 2 else 1)
    optimizer = (
        0.0 if setup.offload_optimizer else params * states / (n if setup.zero_stage >= 1 else 1)
    )
    return parameters, gradients, optimizer


def activation_bytes_per_token_layer(dims: ModelDims, *, bf16: bool) -> float:
    """Bytes one token's activations take in one decoder layer, saved for backward.

    Elements saved, as a Hugging Face Llama-style layer saves them: two RMSNorms (each
    keeps its input upcast to fp32, two elements' worth, and its output), rotary
    embedding's q and k with their rotated copies, attention's q and the k and v repeated
    to every head (grouped-query attention expands them), its output and the contiguous
    copy fed to the output projection, and the MLP's gate and up outputs, the activation
    and the product fed to the down projection.
    """
    h, ff = dims.d_model, dims.d_ff
    kv = h * dims.n_kv_heads // dims.n_heads
    norms = 2 * 3 * h
    rotary = 2 * h + 2 * kv
    attention = 5 * h  # q, repeated k and v, output, output-projection input
    mlp = (4 if dims.gated_mlp else 2) * ff
    return (norms + rotary + attention + mlp) * (2.0 if bf16 else 4.0)


def activations_bytes(dims: ModelDims, setup: TrainSetup) -> float:
    """Activation bytes per GPU for one micro-batch."""
    tokens = setup.micro_batch_size * setup.seq_len
    width = 2.0 if setup.bf16 else 4.0
    per_layer = activation_bytes_per_token_layer(dims, bf16=setup.bf16) * tokens
    final_norm = 3 * dims.d_model * tokens * width
    if setup.activation_checkpointing:
        # each layer's input kept, one layer's full activations during its recompute
        return dims.n_layer * tokens * dims.d_model * width + per_layer + final_norm
    return dims.n_layer * per_layer + final_norm


def logits_bytes(
    dims: ModelDims, setup: TrainSetup, *, chunk_tokens: int = LOSS_CHUNK_TOKENS
) -> float:
    """Bytes of logits alive at once under the chunked loss: one chunk's 16-bit logits, its
    fp32 copy and its fp32 gradient, plus the final hidden states' gradient (fp32)."""
    tokens = setup.micro_batch_size * setup.seq_len
    chunk = min(chunk_tokens, tokens)
    width = 2.0 if setup.bf16 else 4.0
    per_chunk = chunk * dims.vocab_size * (width + 4.0 + 4.0)
    return per_chunk + tokens * dims.d_model * 4.0


def plan(dims: ModelDims, setup: TrainSetup) -> MemoryPlan:
    """Estimated per-GPU bytes of ``setup`` training the model ``dims``."""
    parameters, gradients, optimizer = model_state_bytes(dims.params, setup)
    width = 2.0 if setup.bf16 else 4.0
    if setup.zero_stage >= 3:
        parameters += STAGE3_LIVE_LAYERS * dims.layer_params * width
    return MemoryPlan(
        setup=setup,
        parameters=parameters,
        gradients=gradients,
        optimizer=optimizer,
        activations=activations_bytes(dims, setup),
        logits=logits_bytes(dims, setup),
        buffers=setup.reduce_bucket_elements * width if setup.zero_stage >= 2 else 0.0,
        margin=FRAMEWORK_MARGIN_BYTES,
    )


def cheapest_fix(dims: ModelDims, setup: TrainSetup) -> str | None:
    """The cheapest change that makes ``setup`` fit, as a phrase naming spec fields; None
    when it fits already.

    Tried in order of cost: a higher ZeRO stage (free but for communication), activation
    checkpointing (about a third more compute), a smaller micro-batch (more accumulation
    steps), more GPUs per cell (whole nodes once a cell spans more than one), and last
    optimizer offload (host memory and a slower step).
    """
    if plan(dims, setup).fits:
        return None
    for stage in range(setup.zero_stage + 1, 4):
        if plan(dims, replace(setup, zero_stage=stage)).fits:
            return f"raise train.zero_stage to {stage}"
    steps = [replace(setup, zero_stage=3)]
    if not setup.activation_checkpointing:
        steps.append(replace(steps[-1], activation_checkpointing=True))
    micro = setup.micro_batch_size // 2
    while micro >= 1:
        steps.append(replace(steps[-1], micro_batch_size=micro))
        micro //= 2
    for candidate in steps[1:]:
        if plan(dims, candidate).fits:
            return f"set {_changes(setup, candidate)}"
    for candidate in steps:
        gpus = gpus_needed(dims, candidate)
        if gpus is None:
            continue
        offload = replace(candidate, offload_optimizer=True)
        alternative = f", or set {_changes(setup, offload)}" if plan(dims, offload).fits else ""
        changes = _changes(setup, candidate)
        prefix = f"set {changes} and use" if changes else "use"
        per_node = setup.gpus_per_node
        if gpus <= per_node:
            return (
                f"{prefix} {gpus} GPUs per cell (resources.num_workers x "
                f"resources.gpus_per_worker){alternative}"
            )
        nodes = math.ceil(gpus / per_node)
        return (
            f"{prefix} {nodes} nodes of {per_node} GPUs per cell ({nodes * per_node} GPUs: "
            f"resources.num_workers x resources.gpus_per_worker){alternative}"
        )
    for candidate in steps:
        offload = replace(candidate, offload_optimizer=True)
        if plan(dims, offload).fits:
            return f"set {_changes(setup, offload)}"
    return "no setup fits: use GPUs with more memory or a shorter train.seq_len"


def _changes(old: TrainSetup, new: TrainSetup) -> str:
    """The spec settings that turn ``old`` into ``new``, as ``field: value`` pairs."""
    changes = []
    if new.zero_stage != old.zero_stage:
        changes.append(f"train.zero_stage: {new.zero_stage}")
    if new.activation_checkpointing != old.activation_checkpointing:
        changes.append("train.activation_checkpointing: true")
    if new.micro_batch_size != old.micro_batch_size:
        changes.append(f"train.micro_batch_size: {new.micro_batch_size}")
    if new.offload_optimizer != old.offload_optimizer:
        changes.append("train.offload_optimizer: true")
    return ", ".join(changes)


def gpus_needed(dims: ModelDims, setup: TrainSetup, *, limit: int = 4096) -> int | None:
    """The fewest data-parallel GPUs with which ``setup`` fits (None: no count does, as
    when activations alone exceed one GPU)."""
    per_node = setup.gpus_per_node
    first_node = range(setup.gpus, per_node + 1)
    whole_nodes = range(max(2, math.ceil(setup.gpus / per_node)) * per_node, limit + 1, per_node)
    for gpus in (*first_node, *whole_nodes):
        if plan(dims, replace(setup, gpus=gpus)).fits:
            return gpus
    return None


def model_dims(config, *, trust_remote_code: bool = False) -> ModelDims:
    """`ModelDims` of a Hugging Face model configuration; parameters counted on the meta
    device (no memory, no weights), so any architecture the config describes is counted
    exactly. ``trust_remote_code``: the config's model class is the model's own code."""
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, trust_remote_code=trust_remote_code)
    params = sum(p.numel() for p in model.parameters())
    text = getattr(config, "text_config", None) or config
    d_model = getattr(text, "hidden_size", None) or text.n_embd
    heads = getattr(text, "num_attention_heads", None) or text.n_head
    return ModelDims(
        params=int(params),
        n_layer=getattr(text, "num_hidden_layers", None) or text.n_layer,
        d_model=d_model,
        d_ff=getattr(text, "intermediate_size", None)
        or getattr(text, "n_inner", None)
        or 4 * d_model,
        n_heads=heads,
        n_kv_heads=getattr(text, "num_key_value_heads", None) or heads,
        vocab_size=int(text.vocab_size),
        gated_mlp=hasattr(text, "intermediate_size") and "gpt2" not in str(text.model_type),
    )


def gpu_memory_bytes(kind: str | None, memory_gib: float | None) -> int | None:
    """A GPU's memory: the explicit figure, else the kind's from `GPU_KINDS`, else None."""
    if memory_gib is not None:
        return int(memory_gib * GIB)
    if kind is not None and kind.lower() in GPU_KINDS:
        return int(GPU_KINDS[kind.lower()][0] * GIB)
    return None


def peak_flops(kind: str | None, override: float | None) -> float | None:
    """Dense bf16 peak FLOP/s of one device: the explicit figure, else the kind's."""
    if override is not None:
        return float(override)
    if kind is not None and kind.lower() in GPU_KINDS:
        return GPU_KINDS[kind.lower()][1]
    return None


def spec_setup(
    train,
    *,
    gpus: int,
    gpu_memory_bytes: int,
    gpus_per_node: int = 8,
    dims: ModelDims | None = None,
) -> TrainSetup:
    """The `TrainSetup` of a spec's ``train`` section (`anneal.run_spec.TrainSpec`) on
    ``gpus`` GPUs; ``activation_checkpointing`` left unset there is turned on here when
    ``dims`` is given and the run fits only with it."""
    setup = TrainSetup(
        zero_stage=train.zero_stage,
        bf16=train.precision in ("auto", "bf16"),
        micro_batch_size=train.micro_batch_size,
        seq_len=train.seq_len,
        activation_checkpointing=bool(train.activation_checkpointing),
        offload_optimizer=train.offload_optimizer,
        gpus=gpus,
        gpu_memory_bytes=gpu_memory_bytes,
        gpus_per_node=gpus_per_node,
    )
    if train.activation_checkpointing is None and dims is not None and not plan(dims, setup).fits:
        with_checkpointing = replace(setup, activation_checkpointing=True)
        if plan(dims, with_checkpointing).fits:
            return with_checkpointing
    return setup


def describe(dims: ModelDims, setup: TrainSetup) -> str:
    """The setup in words, for the line ``annealscale validate`` prints."""
    return (
        f"{dims.params / 1e9:.2f}B parameters, ZeRO-{setup.zero_stage}, "
        f"{'bf16' if setup.bf16 else 'fp32'}, micro-batch {setup.micro_batch_size} x "
        f"{setup.seq_len} tokens, {setup.gpus} GPU{'s' if setup.gpus > 1 else ''}, "
        f"activation checkpointing {'on' if setup.activation_checkpointing else 'off'}"
        f"{', optimizer offload' if setup.offload_optimizer else ''}"
    )
