"""``annealscale``: the command-line entry point.

Bad input ends with one line naming the field or file and what to do, and exit code 2;
no traceback. ``--debug`` shows tracebacks.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path

import annealscale.examples
from annealscale.cluster.arg_types import positive_float, positive_int, probability
from annealscale.core.redact import RedactingFilter, redact
from annealscale.core.units import pflops

EXAMPLES = Path(annealscale.examples.__file__).resolve().parent
"""The example specs, shipped inside the package (the demo runs from an installed wheel)."""

log = logging.getLogger("annealscale")


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    _setup_logging(args.quiet or getattr(args, "sweep_quiet", False), args.debug)
    from annealscale.core.errors import AnnealscaleError

    ray_was_up = _ray_is_up()
    try:
        code = args.func(args)
        if not ray_was_up:
            _stop_local_ray()
        return code
    except AnnealscaleError as err:
        if args.debug:
            raise
        line = " ".join(str(err).split())  # one line, whatever the message held
        print(f"annealscale: error: {redact(line)}", file=sys.stderr)
        return 2
    except OSError as err:
        if err.errno != 28 or args.debug:  # ENOSPC
            raise
        print(
            f"annealscale: error: no space left on device ({err.filename or err}); finished "
            "cells are kept: free space on the storage path or --out and rerun",
            file=sys.stderr,
        )
        return 1
    except KeyboardInterrupt as err:
        # SIGINT or SIGTERM (tune.interrupts): the running cells were stopped; stop the
        # local Ray this process started too, so no Ray process outlives it.
        if "ray" in sys.modules:
            sys.modules["ray"].shutdown()
        print(
            f"annealscale: interrupted ({getattr(err, 'signal_name', 'SIGINT')}); finished "
            "cells are kept, nothing was written over the results; rerun with --resume",
            file=sys.stderr,
        )
        return getattr(err, "exit_code", 130)


def _ray_is_up() -> bool:
    ray = sys.modules.get("ray")
    return ray is not None and ray.is_initialized()


def _stop_local_ray() -> None:
    """Disconnect from the Ray this command started once its work is written, with Ctrl-C
    and SIGTERM held off: a signal in this second of teardown would otherwise land in Ray's
    own exit hook (a traceback, sometimes a crash) after everything was written."""
    if not _ray_is_up() or threading.current_thread() is not threading.main_thread():
        return
    ray = sys.modules["ray"]
    held = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        ray.shutdown()
    finally:
        for sig, handler in held.items():
            signal.signal(sig, handler)


class _Parser(argparse.ArgumentParser):
    """argparse with its errors as one line (naming the command and ``--help``) and exit
    code 2, like every other bad input; the usage block stays behind ``--help``."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {redact(message)}; see {self.prog} --help\n")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="annealscale",
        description="Pick domain data sources by fitting scaling laws to small anneals.",
    )
    parser.add_argument("--quiet", action="store_true", help="only warnings and results")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(required=True, metavar="COMMAND")

    demo = sub.add_parser("demo", help="run the offline demo end to end and write a report")
    demo.add_argument("--quick", action="store_true", help="2 sources x 2 spends x 2 budgets")
    demo.add_argument("--out", default="runs/demo", help="output directory")
    demo.add_argument("--spec", default=str(EXAMPLES / "demo.yaml"), help=argparse.SUPPRESS)
    demo.add_argument(
        "--force", action="store_true", help="replace another spec's results in --out"
    )
    demo.set_defaults(func=_cmd_demo)

    schema = sub.add_parser(
        "schema",
        help="print the spec's JSON Schema (for editors), or with --markdown its reference page",
    )
    schema.add_argument(
        "--markdown", action="store_true", help="the spec reference page (docs/spec-reference.md)"
    )
    schema.set_defaults(func=_cmd_schema)

    base = sub.add_parser("base", help="build (or find cached) the demo corpus and base model")
    base.set_defaults(func=_cmd_base)

    sweep = sub.add_parser("sweep", help="run the grid of a spec and analyse it")
    sweep.add_argument("spec", help="experiment spec (YAML)")
    sweep.add_argument("--out", required=True, help="output directory")
    sweep.add_argument("--address", help="Ray cluster address (default: $RAY_ADDRESS or local)")
    sweep.add_argument("--no-analyze", action="store_true", help="skip the report")
    sweep.add_argument(
        "--resume",
        action="store_true",
        help="restore the interrupted Tune experiment (finished cells never rerun either way)",
    )
    sweep.add_argument(
        "--quiet",
        dest="sweep_quiet",
        action="store_true",
        help="no progress lines (for CI)",
    )
    sweep.add_argument(
        "--force",
        action="store_true",
        help="write into an --out that holds another spec's results (they are replaced)",
    )
    sweep.add_argument(
        "--adaptive",
        action="store_true",
        help="run only the cells the proposer picks, until the spec's adaptive stop rule",
    )
    sweep.set_defaults(func=_cmd_sweep)

    propose = sub.add_parser("propose", help="print the next cells to run for a results table")
    propose.add_argument("results", help="results.parquet of a sweep")
    propose.add_argument(
        "-n", type=positive_int, default=4, help="cells to propose (chosen jointly)"
    )
    propose.add_argument(
        "--target-tokens", type=positive_float, help="training tokens at the target"
    )
    propose.add_argument(
        "--target-spend", type=positive_float, help="curation spend at the target (USD)"
    )
    propose.add_argument(
        "--target-cost", type=positive_float, help="total budget at the target (USD)"
    )
    propose.add_argument(
        "--tokens",
        type=positive_float,
        nargs="*",
        default=(),
        help="extra training budgets to consider",
    )
    propose.add_argument(
        "--law-prior",
        choices=("default", "none"),
        default="default",
        help="prior on the law's shape parameters, as sweeps fit with it (none: plain fits, "
        "overconfident on few cells)",
    )
    _decision_flags(propose)
    propose.set_defaults(func=_cmd_propose)

    analyze = sub.add_parser("analyze", help="fit laws and write the report for a results table")
    analyze.add_argument("results", help="results.parquet of a sweep")
    analyze.add_argument("--out", required=True, help="output directory")
    analyze.add_argument(
        "--target-tokens",
        type=positive_float,
        help="training tokens of the final anneal (the target)",
    )
    analyze.add_argument(
        "--target-spend", type=positive_float, help="curation spend per source at the target (USD)"
    )
    analyze.add_argument(
        "--target-cost",
        type=positive_float,
        help="total budget to split across sources, curation and training (USD)",
    )
    analyze.add_argument(
        "--metric",
        default="domain_bpb",
        help="metric to decide on: domain_bpb (default), a task's loss task/<task>/bpb, or a "
        "task score task/<task>/<metric> (e.g. task/mathqa_local/acc; higher is better), "
        "predicted through the law of task/<task>/bpb and a fitted sigmoid link",
    )
    analyze.add_argument(
        "--chance",
        type=float,
        default=None,
        help="floor of a task score's link, e.g. 0.25 for four choices (default: fitted)",
    )
    _decision_flags(analyze)
    analyze.set_defaults(func=_cmd_analyze)

    validate = sub.add_parser("validate", help="check a spec and list its cells; runs nothing")
    validate.add_argument("spec")
    validate.set_defaults(func=_cmd_validate)

    from annealscale.cluster.jobs import add_job_commands
    from annealscale.cluster.launch import add_cluster_commands

    add_job_commands(sub)
    add_cluster_commands(sub)
    return parser


def quick_variant(spec):
    """The ``--quick`` demo: the first two sources, the smallest and largest spend, the two
    smallest training budgets."""
    from annealscale.tune.spec import GridSpec

    spends = sorted(spec.grid.curation_spend)
    tokens = sorted(spec.grid.train_tokens)
    return spec.replace(
        name=spec.name + "-quick",
        sources=tuple(s.replace(curation_spend=None) for s in spec.sources[:2]),
        grid=GridSpec(
            curation_spend=(spends[0], spends[-1]),
            train_tokens=tuple(tokens[:2]),
            seeds=spec.grid.seeds[:1],
        ),
    )


def _cmd_demo(args) -> int:
    from annealscale.anneal.demo import DemoAssets
    from annealscale.tune.spec import load_spec

    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the demo never touches the network
    # Ray starts its workers at niceness 15 (`worker_niceness`); on a shared laptop the
    # demo's actors then wait behind everything else. The demo's local Ray only.
    os.environ.setdefault("RAY_worker_niceness", "0")
    spec = load_spec(args.spec)
    if args.quick:
        spec = quick_variant(spec)
    check_out_dir(args.out)  # before the assets: their first build takes minutes
    assets = DemoAssets()
    started = time.time()
    assets.base_model()
    log.info("demo assets ready in %s (%.0f s)", assets.cache_dir, time.time() - started)
    return _sweep_and_report(
        spec, Path(args.out), assets.resolve, address=None, analyze=True, force=args.force
    )


def _cmd_schema(args) -> int:
    from annealscale.tune.spec_schema import spec_json_schema_text, spec_reference

    sys.stdout.write(spec_reference() if args.markdown else spec_json_schema_text())
    return 0


def _cmd_base(args) -> int:
    from annealscale.anneal.demo import DemoAssets

    assets = DemoAssets()
    print(f"corpus: {assets.corpus().root}")
    print(f"base model: {assets.base_model()}")
    return 0


def _cmd_sweep(args) -> int:
    from annealscale.anneal.demo import DemoAssets
    from annealscale.tune.spec import load_spec
    from annealscale.tune.spec_paths import check_paths

    spec = load_spec(args.spec)
    check_paths(spec)
    return _sweep_and_report(
        spec,
        Path(args.out),
        DemoAssets().resolve,
        address=args.address,
        analyze=not args.no_analyze,
        resume=args.resume,
        adaptive=args.adaptive,
        force=args.force,
    )


def _decision_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--threshold",
        type=probability,
        default=0.9,
        help="least P(best) before the headline says buy (default 0.9)",
    )
    parser.add_argument(
        "--margin",
        default="0.5%",
        help="least predicted gap to the runner-up before buying: a percentage of the "
        "leader's bpb ('0.5%%', the default) or bpb ('0.01')",
    )


def _decision_rule(args):
    from annealscale.analysis.compare import DecisionRule
    from annealscale.analysis.errors import AnalysisError

    text = str(args.margin).strip()
    try:
        if text.endswith("%"):
            return DecisionRule(threshold=args.threshold, margin_pct=float(text[:-1]))
        return DecisionRule(threshold=args.threshold, margin_bpb=float(text.removesuffix("bpb")))
    except ValueError as exc:
        if isinstance(exc, AnalysisError):
            raise
        raise AnalysisError(
            f"--margin {args.margin!r}: give a percentage ('0.5%') or bpb ('0.01')"
        ) from None


def _cmd_propose(args) -> int:
    from annealscale.analysis import evaluate
    from annealscale.analysis.errors import AnalysisError
    from annealscale.analysis.propose import ProposerSettings
    from annealscale.analysis.propose_table import format_proposal, propose_from_results
    from annealscale.analysis.target import Target

    if args.target_tokens is None and args.target_spend is None and args.target_cost is None:
        raise AnalysisError(
            "propose needs a target: --target-tokens, --target-spend or --target-cost"
        )
    target = Target(
        train_tokens=args.target_tokens,
        curation_spend=args.target_spend,
        total_cost=args.target_cost,
    )
    decision = evaluate(
        args.results,
        target_tokens=args.target_tokens,
        target_spend=args.target_spend,
        target_cost=args.target_cost,
        rule=_decision_rule(args),
        next_cells=0,
    ).decision
    settings = None if args.law_prior == "default" else ProposerSettings(law_prior=None)
    proposal = propose_from_results(
        args.results, target=target, n=args.n, extra_tokens=args.tokens, settings=settings
    )
    print(f"Decision (as annealscale analyze): {decision.messages[0]}")
    print(format_proposal(proposal))
    return 0


def _cmd_analyze(args) -> int:
    from annealscale.analysis import evaluate, write_report

    check_out_dir(args.out)
    analysis = evaluate(
        args.results,
        target_tokens=args.target_tokens,
        target_spend=args.target_spend,
        target_cost=args.target_cost,
        rule=_decision_rule(args),
        metric=args.metric,
        chance=args.chance,
    )
    result = write_report(analysis, args.out)
    _print_decision(analysis)
    print(f"report: {result.report_html}")
    return 0


def _print_decision(analysis) -> None:
    """The headline, every sentence, then every warning: what the report leads with."""
    for message in analysis.decision.messages:
        print(message)
    for warning in analysis.warnings():
        print(f"warning: {warning}")


def _cmd_validate(args) -> int:
    from annealscale.tune.cells import expand_grid
    from annealscale.tune.spec import load_spec
    from annealscale.tune.spec_paths import check_paths

    spec = load_spec(args.spec)
    check_paths(spec)
    cells = expand_grid(spec)
    print(f"{args.spec}: valid; {len(spec.sources)} sources, {len(cells)} cells")
    _print_storage_peak(spec)
    for cell in cells:
        print(
            f"  {cell.source:<20} spend={cell.curation_spend:<8g} "
            f"tokens={cell.train_tokens:<9d} seed={cell.seed}"
        )
    _print_memory_plan(spec)
    return 0


def _print_memory_plan(spec) -> None:
    """Per-GPU memory of the spec's training setup on its GPUs; refuses (exit 2) a setup
    that cannot fit, naming the cheapest fix. Every cell shares one setup."""
    from annealscale.anneal import memory_plan
    from annealscale.anneal.model import load_model_config
    from annealscale.core.errors import AnnealscaleError

    res = spec.resources
    if not res.gpus_per_worker:
        return
    memory = memory_plan.gpu_memory_bytes(res.gpu_kind, res.gpu_memory_gib)
    if memory is None or spec.base_model.path.startswith("demo:"):
        print("memory plan: skipped (set resources.gpu_kind or resources.gpu_memory_gib)")
        return
    try:
        config = load_model_config(spec.base_model.path, spec.base_model.trust_remote_code)
    except AnnealscaleError as err:  # a hub id offline: the sweep itself will say so
        print(f"memory plan: skipped ({err})")
        return
    dims = memory_plan.model_dims(config, trust_remote_code=spec.base_model.trust_remote_code)
    setup = memory_plan.spec_setup(
        spec.train,
        gpus=res.num_workers * res.gpus_per_worker,
        gpu_memory_bytes=memory,
        gpus_per_node=res.gpus_per_node,
        dims=dims,
    )
    planned = memory_plan.plan(dims, setup)
    print(f"memory plan ({memory_plan.describe(dims, setup)}): {planned.line()}")
    if not planned.fits:
        raise AnnealscaleError(
            f"train: needs {planned.total / memory_plan.GIB:.0f} GiB per GPU of "
            f"{memory / memory_plan.GIB:.0f}; {memory_plan.cheapest_fix(dims, setup)}"
        )


def _sweep_and_report(
    spec,
    out: Path,
    resolve,
    *,
    address,
    analyze: bool,
    resume: bool = False,
    adaptive: bool = False,
    force: bool = False,
) -> int:
    from annealscale.cluster.local import connect
    from annealscale.cluster.storage_check import check_shared_storage
    from annealscale.tune.sweep import run_sweep

    check_out_dir(str(out))
    connect(address)
    check_shared_storage(spec.storage_path)
    factory, messages, target = None, [], {}
    if adaptive:
        from annealscale.tune.adaptive import SearcherFactory, adaptive_target

        factory = SearcherFactory(spec, out)
        t = adaptive_target(spec)
        target = {
            "target_tokens": t.train_tokens,
            "target_spend": t.curation_spend,
            "target_cost": t.total_cost,
        }
    outcome = run_sweep(spec, out, resolve=resolve, resume=resume, search_alg=factory, force=force)
    print(
        f"sweep: {outcome.finished} finished, {outcome.failed} failed, {outcome.skipped} "
        f"reused from earlier runs, {outcome.ran} run now, {outcome.seconds:.0f} s; "
        f"results: {outcome.results_path}"
    )
    if outcome.independent_train_flops:
        print(
            f"training compute: {pflops(outcome.spent_train_flops):.4g} PFLOP spent, "
            f"{pflops(outcome.independent_train_flops):.4g} PFLOP for the same cells run "
            f"independently ({outcome.spent_train_flops / outcome.independent_train_flops:.2f}x)"
        )
    if factory is not None and factory.searcher is not None:
        from annealscale.tune.adaptive import stop_message

        messages.append(stop_message(factory.summary()))
        print(messages[-1])
    if analyze:
        from annealscale.analysis import analyze as run_analysis

        result = run_analysis(outcome.results_path, out, extra_messages=messages, **target)
        _print_decision(result.analysis)
        print(f"report: {result.report_html}")
    return 1 if outcome.failed else 0


def check_out_dir(out: str) -> None:
    """``--out`` must be (or be creatable as) a directory: refused before any work."""
    from annealscale.core.errors import AnnealscaleError

    path = Path(out).expanduser()
    for place in (path, *path.parents):
        if place.exists():
            if not place.is_dir():
                where = "" if place == path else f" ({place} is a file)"
                raise AnnealscaleError(
                    f"--out {out}: not a directory{where}; give a directory (it is created "
                    "if missing)"
                )
            if not os.access(place, os.W_OK):
                raise AnnealscaleError(f"--out {out}: {place} is not writable; give another")
            return


def _print_storage_peak(spec) -> None:
    """The sweep's peak checkpoint storage under its checkpoint and retention settings
    (checkpoint size from the base model's config when it can be read here)."""
    from annealscale.core.errors import AnnealscaleError
    from annealscale.tune.storage_plan import model_params, sweep_peak

    try:
        params = model_params(spec.base_model.path, spec.base_model.trust_remote_code)
    except AnnealscaleError:
        params = None  # not readable from here (e.g. offline hub id): count checkpoints only
    print(sweep_peak(spec, params).line())


def _setup_logging(quiet: bool, debug: bool) -> None:
    level = logging.WARNING if quiet else (logging.DEBUG if debug else logging.INFO)
    logging.basicConfig(level=level, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())  # an address with a password never logs
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    for noisy in ("ray", "filelock", "urllib3", "DeepSpeed", "torch.distributed"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        hf_logging.set_verbosity_error()
    except ImportError:
        pass


if __name__ == "__main__":
    sys.exit(main())
