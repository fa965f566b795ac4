"""Loading a checkpoint straight into ZeRO-3 partitions: no rank holds the whole model.

The model is built from its configuration inside ``deepspeed.zero.Init``, which partitions
every parameter as its module is constructed, so a rank allocates only ``1/world`` of the
weights. Each rank then reads from the checkpoint's safetensors files only the rows that
cover its own flat partition of each parameter (``get_slice`` reads those rows from disk,
nothing more) and copies its slice in: no collective, no full tensor, one parameter's rows
at a time.

This does what the Hugging Face DeepSpeed integration (``HfDeepSpeedConfig`` before
``from_pretrained``) does, without its dependency on ``accelerate`` and without each rank
reading whole shard files. Checkpoints without safetensors files (``.bin``) are loaded
whole and partitioned by DeepSpeed afterwards, with a warning.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

log = logging.getLogger(__name__)


def load_partitioned(path: str, ds_config: dict, *, dtype, trust_remote_code: bool = False):
    """The causal LM at local directory ``path`` with its parameters ZeRO-3 partitioned
    over the current process group, in ``dtype``; None when ``path`` holds no safetensors
    (the caller loads it the ordinary way)."""
    import deepspeed
    import torch
    import torch.distributed as dist
    from transformers import AutoModelForCausalLM
    from transformers.initialization import no_init_weights

    from annealscale.anneal.model import load_model_config

    files = _safetensors_files(Path(path))
    if files is None:
        log.warning("%s: no safetensors files; every rank loads the whole model", path)
        return None
    config = load_model_config(path, trust_remote_code)
    deepspeed.init_distributed(dist_backend=dist.get_backend(), auto_mpi_discovery=False)
    # Build it once on the meta device first: the model's modules (and torch._dynamo, which
    # Transformers imports lazily) must be imported before zero.Init patches tensor
    # creation, or their import fails inside it.
    with torch.device("meta"):
        AutoModelForCausalLM.from_config(config, trust_remote_code=trust_remote_code)
    # no_init_weights: the weights are all read from the checkpoint below, and Transformers'
    # initialisers (zeroing a padding row, say) cannot index an already partitioned weight
    # zero.Init takes its dtype from the config's bf16 section: given one explicitly,
    # DeepSpeed 0.19 uses bf16 on CPU whatever it is (an operator-precedence slip)
    with no_init_weights(), deepspeed.zero.Init(config_dict_or_path=ds_config):
        model = AutoModelForCausalLM.from_config(
            config, trust_remote_code=trust_remote_code, dtype=dtype
        )
    # without the initialisers Transformers does not tie the output projection to the
    # input embedding either; a tied checkpoint holds only the embedding
    if getattr(model.config.get_text_config(), "tie_word_embeddings", False):
        model.tie_weights()
    rank = dist.get_rank()
    _fill_partitions(model, files, rank)
    model.eval()  # as from_pretrained returns a model
    return model


def local_parameter_bytes(model) -> int:
    """Bytes of parameter storage this rank holds: its partitions under ZeRO-3, else all."""
    total = 0
    for param in model.parameters():
        local = getattr(param, "ds_tensor", None)
        tensor = local if local is not None else param.data
        total += tensor.numel() * tensor.element_size()
    return total


def _safetensors_files(directory: Path) -> dict[str, Path] | None:
    """Tensor name -> file holding it, from the index or the single file."""
    index = directory / "model.safetensors.index.json"
    if index.is_file():
        weight_map = json.loads(index.read_text())["weight_map"]
        return {name: directory / file for name, file in weight_map.items()}
    single = directory / "model.safetensors"
    if not single.is_file():
        return None
    from safetensors import safe_open

    with safe_open(str(single), framework="pt") as handle:
        return dict.fromkeys(handle.keys(), single)


def _fill_partitions(model, files: dict[str, Path], rank: int) -> None:
    import torch
    from safetensors import safe_open

    handles: dict[Path, object] = {}
    try:
        for name, param in model.named_parameters():
            key = _key(name, files)
            file = files[key]
            if file not in handles:
                handles[file] = safe_open(str(file), framework="pt")
            rows = handles[file].get_slice(key)
            shape = tuple(param.ds_shape)
            numel = math.prod(shape)
            size = param.ds_tensor.ds_numel  # elements per rank's partition
            start, end = rank * size, min((rank + 1) * size, numel)
            if start >= end:
                continue
            row = math.prod(shape[1:]) if len(shape) > 1 else 1
            first, last = start // row, math.ceil(end / row)
            block = rows[first:last].reshape(-1)  # (rows x row,) covering [start, end)
            piece = block[start - first * row : end - first * row]
            with torch.no_grad():
                param.ds_tensor.data[: end - start].copy_(piece.to(param.ds_tensor.dtype))
    finally:
        handles.clear()


def _key(name: str, files: dict[str, Path]) -> str:
    if name in files:
        return name
    raise KeyError(f"checkpoint has no tensor {name!r} (ZeRO-3 partitioned load)")
