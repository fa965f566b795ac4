"""Optional experiment trackers as Ray Tune logger callbacks, switched on in the spec.

Ray Tune adds CSV, JSON and (when tensorboardX is importable) TensorBoard loggers to every
experiment unless told not to. A sweep asks for exactly the loggers its spec names: the
JSON logger always (each trial's ``result.json``, which a restored experiment reads), and
TensorBoard, MLflow and Weights & Biases only when switched on. Missing packages are
reported before any compute starts.
"""

from __future__ import annotations

import os

from annealscale.core.errors import AnnealscaleError
from annealscale.tune.spec import TrackingSpec

DISABLE_AUTO_LOGGERS = "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"


def _require(module: str, field: str, extra: str) -> None:
    import importlib.util

    if importlib.util.find_spec(module) is None:
        raise AnnealscaleError(
            f"tracking.{field}: the {module} package is not installed; "
            f"pip install 'annealscale[{extra}]' or turn it off in the spec"
        )


def check_trackers(tracking: TrackingSpec) -> None:
    """Fail fast when a switched-on tracker's package is missing."""
    if tracking.tensorboard:
        _require("tensorboardX", "tensorboard", "tensorboard")
    if tracking.mlflow_tracking_uri:
        _require("mlflow", "mlflow_tracking_uri", "mlflow")
    if tracking.wandb_project:
        _require("wandb", "wandb_project", "wandb")


def tracker_callbacks(tracking: TrackingSpec, experiment: str) -> list:
    """Tune logger callbacks for ``tracking``; turns Tune's automatic loggers off."""
    from ray.tune.logger import JsonLoggerCallback

    check_trackers(tracking)
    # Read by Tune when `fit` builds its callbacks; without it TensorBoard would always log.
    os.environ[DISABLE_AUTO_LOGGERS] = "1"
    callbacks: list = [JsonLoggerCallback()]
    if tracking.tensorboard:
        from ray.tune.logger import TBXLoggerCallback

        callbacks.append(TBXLoggerCallback())
    if tracking.mlflow_tracking_uri:
        from ray.air.integrations.mlflow import MLflowLoggerCallback

        callbacks.append(
            MLflowLoggerCallback(
                tracking_uri=tracking.mlflow_tracking_uri,
                experiment_name=experiment,
                save_artifact=False,
            )
        )
    if tracking.wandb_project:
        from ray.air.integrations.wandb import WandbLoggerCallback

        callbacks.append(WandbLoggerCallback(project=tracking.wandb_project, group=experiment))
    return callbacks
