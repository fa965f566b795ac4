"""Evaluation tasks through EleutherAI's lm-evaluation-harness (``lm-eval``): the one path
every task of a cell is scored on.

A team's own tasks are lm-eval YAML configs under an ``include_path`` (data from local
files: ``dataset_path: json`` with ``dataset_kwargs.data_files``); our JSONL
multiple-choice format is adapted to an inline lm-eval task (`choice_task_config`) so it
runs through the same harness. `ScoringLM` is the harness's model: it encodes each
(context, continuation) request with `anneal.tasks.encode_pair` and scores it with
`anneal.evaluate.score_choices`, splitting the requests over the data-parallel ranks and
summing the scores back, so under ZeRO-3 every rank runs the same forward passes and no
weights are gathered whole. The harness itself sees one process (rank 0 of 1) on every
rank and computes identical metrics on each.

Results become named columns (`result_columns`): ``task/<task>/<metric>`` and
``task/<task>/<metric>_stderr`` for every metric the harness reports, and for
loglikelihood tasks ``task/<task>/bpb`` (with ``_stderr``), the mean bits per byte of the
correct continuation: the task's loss, smooth in scale where accuracy jumps.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from annealscale.core.errors import AnnealscaleError

BOOTSTRAP_ITERS = 1000
"""Bootstrap resamples for the metrics whose stderr has no closed form (accuracy's has;
the harness's default of 100000 takes minutes per metric on a CPU)."""
FEWSHOT_SEED = 1234
"""The harness's default seed for drawing few-shot examples."""
SCORED_TYPES = ("multiple_choice", "loglikelihood")
"""Output types `ScoringLM` scores; generation and rolling perplexity are not supported."""
DATA_FILE_SUFFIXES = (".yaml", ".yml", ".json", ".jsonl", ".csv", ".parquet", ".txt", ".py")


@dataclass(frozen=True, kw_only=True)
class ChoiceTask:
    """One of our JSONL multiple-choice tasks (`anneal.run_spec.TaskSpec`), resolved."""

    name: str
    path: str
    max_questions: int | None = None


@dataclass(frozen=True, kw_only=True)
class TaskSuite:
    """Every task a cell is evaluated on, with every path resolved."""

    tasks: tuple[str, ...] = ()
    """lm-eval task, group or tag names."""
    include_paths: tuple[str, ...] = ()
    """Directories (or YAML files) of the team's own lm-eval task configs."""
    include_defaults: bool = False
    """Also index the harness's built-in tasks (their data come from the hub)."""
    num_fewshot: int | None = None
    """Few-shot examples per question; None keeps each task's own default."""
    limit: int | None = None
    """Score only the first this many documents of each lm-eval task."""
    batch_size: int = 8
    """Sequences per forward pass."""
    choice_tasks: tuple[ChoiceTask, ...] = ()
    """Our JSONL multiple-choice tasks, run through the harness as inline tasks."""
    max_len: int = 129
    """Tokens per scored sequence (the anneal's ``seq_len + 1``)."""
    columns: tuple[str, ...] = ()
    """Result columns the suite produces (known once it ran on the base model)."""
    cache_dir: str | None = None
    """Where `datasets` keeps the tasks' prepared data (the sweep's cache; None: its
    default under the home directory). Not part of any identity."""

    @property
    def empty(self) -> bool:
        return not self.tasks and not self.choice_tasks


def harness_version() -> str:
    import importlib.metadata

    return importlib.metadata.version("lm_eval")


def _require_harness() -> None:
    try:
        import lm_eval  # noqa: F401
    except ImportError:
        raise AnnealscaleError(
            "eval.harness / eval.tasks: evaluation tasks need lm-evaluation-harness; "
            "pip install 'annealscale[tasks]'"
        ) from None


def task_manager(suite: TaskSuite):
    """The harness's task index over ``suite``'s include paths."""
    _require_harness()
    from lm_eval.tasks import TaskManager

    return TaskManager(
        include_path=list(suite.include_paths) or None, include_defaults=suite.include_defaults
    )


# ---- our JSONL format as an inline lm-eval task -------------------------------------


def questions_dataset(path: str, max_questions: int | None = None, **_):
    """A JSONL of questions (`anneal.tasks.read_questions`) as the harness's dataset: one
    ``test`` split whose ``continuations`` are the texts scored after the question."""
    import datasets

    from annealscale.anneal.tasks import continuation_text, read_questions

    rows = [
        {
            "question": q.question,
            "continuations": [continuation_text(q.question, c) for c in q.choices],
            "answer": q.answer,
        }
        for q in read_questions(path, max_questions)
    ]
    return datasets.DatasetDict({"test": datasets.Dataset.from_list(rows)})


def choice_task_config(task: ChoiceTask) -> dict:
    """The inline lm-eval config of a JSONL task: zero-shot multiple choice scored on
    exactly the sequences `anneal.tasks.encode_questions` builds."""
    return {
        "task": task.name,
        "custom_dataset": questions_dataset,
        "dataset_kwargs": {"path": task.path, "max_questions": task.max_questions},
        "test_split": "test",
        "output_type": "multiple_choice",
        "doc_to_text": "question",
        "doc_to_choice": "continuations",
        "doc_to_target": "answer",
        "target_delimiter": "",
        "num_fewshot": 0,
        "metric_list": [{"metric": "acc", "aggregation": "mean", "higher_is_better": True}],
    }


# ---- loading and checking ----------------------------------------------------------


def load_suite(suite: TaskSuite, manager=None) -> list[tuple[str, dict, int | None]]:
    """Build every task of ``suite``: ``(name, loaded task dict, limit)`` per entry.

    lm-eval tasks get ``suite.limit`` and ``suite.num_fewshot`` (a task whose config fixes
    zero shots keeps it, as in ``simple_evaluate``); JSONL tasks are cut at read time.
    """
    _require_harness()
    with _datasets_cache(suite.cache_dir), _quiet_harness():
        return _load_suite(suite, manager)


@contextmanager
def _quiet_harness():
    """The harness logs a line per task loaded and per request type run, and warns that
    an inline task's dataset takes keyword arguments; cells keep its errors only."""
    import logging

    harness_log = logging.getLogger("lm_eval")
    level = harness_log.level
    harness_log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        harness_log.setLevel(level)


@contextmanager
def _datasets_cache(cache_dir: str | None):
    """`datasets` reads its cache directory from its config at each load."""
    import datasets

    if cache_dir is None:
        yield
        return
    before = datasets.config.HF_DATASETS_CACHE
    datasets.config.HF_DATASETS_CACHE = Path(cache_dir)
    try:
        yield
    finally:
        datasets.config.HF_DATASETS_CACHE = before


def _load_suite(suite: TaskSuite, manager) -> list[tuple[str, dict, int | None]]:
    entries = []
    if suite.tasks:
        manager = manager or task_manager(suite)
        for name in suite.tasks:
            loaded = manager.load([name])
            for task in loaded["tasks"].values():
                _configure(task, suite.num_fewshot)
            entries.append((name, loaded, suite.limit))
    if suite.choice_tasks:
        from lm_eval.tasks import TaskManager

        inline = TaskManager(include_defaults=False)
        for choice in suite.choice_tasks:
            loaded = inline.load([choice_task_config(choice)])
            for task in loaded["tasks"].values():
                _configure(task, 0)
            entries.append((choice.name, loaded, None))
    return entries


def _configure(task, num_fewshot: int | None) -> None:
    default = task.get_config("num_fewshot")
    if num_fewshot is not None and default != 0:
        task.set_config(key="num_fewshot", value=num_fewshot)
    elif default is None:
        task.set_config(key="num_fewshot", value=0)
    task.set_fewshot_seed(seed=FEWSHOT_SEED)


def check_suite(suite: TaskSuite, field_name: str = "eval.harness") -> None:
    """Fail with one line, before any compute, when a task name is unknown, a task's data
    cannot be loaded, or a task needs generation: the driver builds every task once."""
    _require_harness()
    for path in suite.include_paths:
        if not Path(path).exists():
            raise AnnealscaleError(
                f"{field_name}.include_path: '{path}' does not exist; give a directory of "
                "lm-eval task YAML files"
            )
    manager = task_manager(suite) if suite.tasks else None
    for i, name in enumerate(suite.tasks):
        if name not in manager.all_tasks:
            import difflib

            close = difflib.get_close_matches(name, manager.all_tasks, n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            where = "under include_path" if not suite.include_defaults else "in lm-eval"
            raise AnnealscaleError(
                f"{field_name}.tasks[{i}]: no lm-eval task named '{name}' {where}{hint}"
            )
    for i, name in enumerate(suite.tasks):
        try:
            (_, loaded, _), *_ = load_suite(
                TaskSuite(
                    tasks=(name,),
                    include_paths=suite.include_paths,
                    include_defaults=suite.include_defaults,
                    cache_dir=suite.cache_dir,
                ),
                manager,
            )
        except AnnealscaleError:
            raise
        except Exception as err:  # the harness and datasets raise many kinds
            raise AnnealscaleError(
                f"{field_name}.tasks[{i}]: task '{name}' could not be loaded: "
                f"{_first_line(err)}; check its YAML and that its data files exist"
            ) from None
        for task_name, task in loaded["tasks"].items():
            kind = task.get_config("output_type")
            if kind not in SCORED_TYPES:
                raise AnnealscaleError(
                    f"{field_name}.tasks[{i}]: task '{task_name}' is a {kind} task; cells "
                    f"score {' and '.join(SCORED_TYPES)} tasks only"
                )


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}"[:300]


# ---- identity ----------------------------------------------------------------------


def suite_identity(suite: TaskSuite) -> str:
    """Hash of what the suite's scores depend on besides the spec's fields: the harness
    version, the bytes of every task config under the include paths and of every local
    data file those configs name. Built-in tasks are identified by name and version."""
    from annealscale.core.hashing import content_hash

    if suite.empty:
        return ""
    files = {}
    for root in suite.include_paths:
        for path in _config_files(Path(root)):
            files[str(path)] = _file_digest(path)
            for data in _data_files(path):
                files[str(data)] = _file_digest(data)
    for choice in suite.choice_tasks:
        files[choice.path] = _file_digest(Path(choice.path))
    return content_hash(["lm-eval", _version_or_none(), sorted(files.items())])


def _version_or_none() -> str | None:
    import importlib.metadata

    try:
        return harness_version()
    except importlib.metadata.PackageNotFoundError:  # validation says to install it
        return None


def _config_files(root: Path) -> list[Path]:
    if root.is_file():
        return [root]
    if not root.is_dir():
        return []
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix in DATA_FILE_SUFFIXES)


def _data_files(config: Path) -> list[Path]:
    """Local files a task YAML names in ``dataset_kwargs.data_files``: absolute, or relative
    to the working directory (as `datasets` reads them) or to the YAML file."""
    import yaml

    if config.suffix not in (".yaml", ".yml"):
        return []
    try:
        loaded = yaml.load(config.read_text(), Loader=_tolerant_loader())
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return []  # its bytes are hashed all the same; loading it reports the problem
    kwargs = (loaded or {}).get("dataset_kwargs") if isinstance(loaded, dict) else None
    if not isinstance(kwargs, dict):
        return []
    named = kwargs.get("data_files")
    values = named.values() if isinstance(named, dict) else [named]
    paths = []
    for value in values:
        for item in value if isinstance(value, list | tuple) else [value]:
            if isinstance(item, str):
                path = Path(item).expanduser()
                for where in [path] if path.is_absolute() else [path, config.parent / path]:
                    paths.extend(sorted(where.parent.glob(where.name)) if "*" in item else [where])
    return [p.resolve() for p in paths if p.is_file()]


def _tolerant_loader():
    import yaml

    class Loader(yaml.SafeLoader):
        """Reads lm-eval YAML whose ``!function`` tags name Python code, without running it."""

    Loader.add_multi_constructor("!", lambda loader, suffix, node: None)
    return Loader


def _file_digest(path: Path) -> str:
    if not path.is_file():
        return "missing"
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


# ---- the model the harness scores with ---------------------------------------------


def _scoring_lm_class():
    from lm_eval.api.model import LM

    class ScoringLM(LM):
        """lm-eval's model interface over an already-loaded causal LM (a DeepSpeed
        engine's module or a plain Hugging Face model): loglikelihood requests only."""

        def __init__(self, model, tokenizer, *, max_len, batch_size, rank, world, reduce):
            super().__init__()
            self.model, self.tokenizer = model, tokenizer
            self.max_len, self.batch_size = max_len, batch_size
            self.shard_rank, self.shard_world = rank, world
            self.reduce = reduce
            self.tokens = 0
            """Tokens this rank ran forward (for evaluation FLOPs)."""

        def loglikelihood(self, requests, disable_tqdm: bool = False):
            from annealscale.anneal.evaluate import score_choices
            from annealscale.anneal.tasks import encode_pairs

            if not requests:
                return []
            encoded = encode_pairs([tuple(r.args) for r in requests], self.tokenizer, self.max_len)
            n, rank, world = encoded.pairs, self.shard_rank, self.shard_world
            mine = np.arange(rank, n, world)
            longest = -(-n // world)
            # pad with a repeat so every rank runs as many batches (results discarded)
            padded = np.concatenate(
                [mine, np.full(longest - len(mine), mine[0] if len(mine) else 0)]
            )
            local, greedy_local = score_choices(
                self.model, encoded, indices=padded, batch_size=self.batch_size, greedy=True
            )
            values = np.zeros(2 * n)
            values[mine] = local[: len(mine)]
            values[n + mine] = greedy_local[: len(mine)]
            values = np.asarray(self.reduce(values.tolist()))
            self.tokens += sum(len(encoded.sequence(int(i))) - 1 for i in mine)
            return [(float(values[i]), bool(values[n + i] > 0.5)) for i in range(n)]

        def loglikelihood_rolling(self, requests, disable_tqdm: bool = False):
            raise NotImplementedError("loglikelihood_rolling tasks are not supported")

        def generate_until(self, requests, disable_tqdm: bool = False):
            raise NotImplementedError("generate_until tasks are not supported")

    return ScoringLM


def scoring_lm(model, tokenizer, *, max_len: int, batch_size: int, rank=0, world=1, reduce=None):
    """A `ScoringLM` (see the module docstring); ``reduce`` sums a list of floats over the
    data-parallel ranks (identity for one process)."""
    _require_harness()
    return _scoring_lm_class()(
        model,
        tokenizer,
        max_len=max_len,
        batch_size=batch_size,
        rank=rank,
        world=world,
        reduce=reduce or (lambda values: values),
    )


# ---- running and naming the results ------------------------------------------------


@dataclass
class SuiteScores:
    metrics: dict[str, float] = field(default_factory=dict)
    """Result columns to their values."""
    tokens: int = 0
    """Tokens this rank ran forward."""


def evaluate_suite(
    model,
    tokenizer,
    suite: TaskSuite,
    *,
    rank: int = 0,
    world: int = 1,
    reduce: Callable[[list[float]], list[float]] | None = None,
) -> SuiteScores:
    """Run every task of ``suite`` on ``model``; the metrics as result columns."""
    from lm_eval.evaluator import evaluate

    lm = scoring_lm(
        model,
        tokenizer,
        max_len=suite.max_len,
        batch_size=suite.batch_size,
        rank=rank,
        world=world,
        reduce=reduce,
    )
    metrics: dict[str, float] = {}
    for _name, loaded, limit in load_suite(suite):
        with _quiet_harness():
            out = evaluate(
                lm=lm,
                task_dict=loaded,
                limit=limit,
                bootstrap_iters=BOOTSTRAP_ITERS,
                log_samples=True,
            )
        metrics.update(result_columns(out, loaded))
    for choice in suite.choice_tasks:  # the pre-harness names of JSONL tasks' metrics
        metrics[f"{choice.name}_accuracy"] = metrics[f"task/{choice.name}/acc"]
        metrics[f"{choice.name}_logprob"] = metrics[f"task/{choice.name}/logprob"]
    return SuiteScores(metrics=metrics, tokens=lm.tokens)


def result_columns(out: dict, loaded: dict) -> dict[str, float]:
    """``task/<task>/<metric>`` (and ``_stderr``) for every metric of every task and group
    in the harness's output ``out``; for loglikelihood tasks also ``bpb`` and
    ``logprob`` of the correct continuation (with ``bpb_stderr``). A metric under a
    filter other than ``none`` is named ``<metric>_<filter>``."""
    columns: dict[str, float] = {}
    for section in ("results", "groups"):
        for task_name, values in (out.get(section) or {}).items():
            for key, value in values.items():
                if "," not in key:
                    continue
                metric, filter_name = key.split(",", 1)
                stderr = metric.endswith("_stderr")
                base = metric[: -len("_stderr")] if stderr else metric
                if filter_name != "none":
                    base = f"{base}_{filter_name}"
                columns[f"task/{task_name}/{base}{'_stderr' if stderr else ''}"] = _number(value)
    for task_name, task in loaded["tasks"].items():
        if task.get_config("output_type") not in SCORED_TYPES:
            continue
        lls, nbytes = correct_continuations(task, (out.get("samples") or {}).get(task_name, []))
        if not lls:
            continue
        bits = -np.asarray(lls) / math.log(2) / np.maximum(np.asarray(nbytes), 1)
        columns[f"task/{task_name}/bpb"] = float(bits.mean())
        columns[f"task/{task_name}/bpb_stderr"] = (
            float(bits.std(ddof=1) / math.sqrt(len(bits))) if len(bits) > 1 else math.nan
        )
        columns[f"task/{task_name}/logprob"] = float(np.mean(lls))
    return columns


def correct_continuations(task, samples: list[dict]) -> tuple[list[float], list[int]]:
    """Log-likelihood (nats) and UTF-8 bytes of each document's correct continuation."""
    lls, nbytes = [], []
    for sample in samples:
        if sample.get("filter", "none") != "none":
            continue
        arguments = sample["arguments"]
        if task.get_config("output_type") == "loglikelihood":
            gold = 0
        else:
            gold = sample["target"]
            gold = gold[0] if isinstance(gold, list | tuple) else gold
            if isinstance(gold, str):
                delimiter = task.get_config("target_delimiter") or ""
                texts = [a[1] for a in arguments]
                gold = texts.index(delimiter + gold) if delimiter + gold in texts else -1
        if not isinstance(gold, int) or not 0 <= gold < len(arguments):
            continue
        response = sample["filtered_resps"][gold]
        ll = response[0] if isinstance(response, list | tuple) else response
        lls.append(float(ll))
        nbytes.append(len(arguments[gold][1].encode("utf-8")))
    return lls, nbytes


def _number(value) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan  # the harness writes "N/A" where it has no stderr


def suite_provenance(suite: TaskSuite) -> str:
    """JSON of the harness version and the tasks' settings, for the results row."""
    return json.dumps(
        {
            "lm_eval": _version_or_none(),
            "tasks": list(suite.tasks),
            "include_paths": list(suite.include_paths),
            "num_fewshot": suite.num_fewshot,
            "limit": suite.limit,
            "choice_tasks": [c.name for c in suite.choice_tasks],
            "identity": suite_identity(suite),
        },
        sort_keys=True,
    )
