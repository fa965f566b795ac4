"""Sweeps as Ray jobs: ``annealscale submit`` and ``annealscale jobs status|logs|stop``.

A submitted sweep runs ``python -m annealscale.cluster.cli sweep SPEC --out OUT`` on the
cluster, in a copy of the local working directory that the Ray Jobs API uploads to the
head. The annealscale package itself travels beside it as a ``py_modules`` entry (a copy
of the package this process imports, staged by `stage_package`), so the cluster runs the
code the user has, whether or not its image has annealscale installed, without a network
fetch. Results go to ``--out``, an absolute path on the cluster's storage: the uploaded
copy is temporary.

Token authentication (Ray's ``RAY_AUTH_MODE=token``): the token is looked up the way Ray
looks it up (``RAY_AUTH_TOKEN``, then the file named by ``RAY_AUTH_TOKEN_PATH``, then
``~/.ray/auth_token`` when ``RAY_AUTH_MODE=token``), or read from ``--token-file``, and
sent as an ``Authorization: Bearer`` header on every request. It is never printed, logged,
put in the job's runtime environment (the cluster keeps that in its job table) or written
anywhere: the job's driver authenticates with the token the cluster's nodes already hold.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import importlib.util
import logging
import os
import re
import shlex
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from annealscale.cluster.arg_types import positive_float, positive_int
from annealscale.core.errors import AnnealscaleError
from annealscale.core.redact import redact

log = logging.getLogger(__name__)

TOKEN_ENV = "RAY_AUTH_TOKEN"
TOKEN_PATH_ENV = "RAY_AUTH_TOKEN_PATH"
AUTH_MODE_ENV = "RAY_AUTH_MODE"
WORKING_DIR_EXCLUDES = (
    ".venv/",
    "runs/",
    ".git",
    "__pycache__/",
    ".pytest_cache/",
    ".ruff_cache/",
    "*.egg-info/",
    "build/",
    "dist/",
)
"""Never uploaded with the working directory: environments, outputs, VCS data, caches
(gitignore patterns, matched the way Ray matches ``runtime_env["excludes"]``)."""
SECRET_ENV_NAMES = (TOKEN_ENV, TOKEN_PATH_ENV)
SECRET_LOOKING = re.compile(
    r"(^|_)(TOKENS?|SECRETS?|PASSWORDS?|PASSWD|PASSPHRASE|CREDENTIALS?|AUTH|COOKIES?|PRIVATE)"
    r"($|_)|KEYS?($|_)",
    re.IGNORECASE,
)
"""Names of variables that look like secrets (``HF_TOKEN``, ``AWS_SECRET_ACCESS_KEY``,
``WANDB_API_KEY``): refused by ``submit --env`` unless ``--allow-secret-env``, since the
cluster keeps a job's environment in its job table, readable by anyone who can list jobs."""


def looks_secret(name: str) -> bool:
    """Whether the environment variable ``name`` looks like it holds a secret."""
    return SECRET_LOOKING.search(name) is not None


@dataclass(frozen=True)
class AuthToken:
    """A cluster token and where it came from; the value never appears in its repr."""

    value: str = field(repr=False)
    source: str
    """What the user set, e.g. ``$RAY_AUTH_TOKEN`` or ``--token-file PATH``."""

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.value}"}


def find_token(
    token_file: str | None, environ: Mapping[str, str], home: Path | None = None
) -> AuthToken | None:
    """The token to send, or None to send none.

    ``--token-file`` wins; then Ray's own order: ``$RAY_AUTH_TOKEN``, the file named by
    ``$RAY_AUTH_TOKEN_PATH``, and ``~/.ray/auth_token`` when ``RAY_AUTH_MODE=token``.
    """
    if token_file:
        named = f"--token-file {token_file}"
        return AuthToken(_read_token_file(Path(token_file), named), named)
    if environ.get(TOKEN_ENV, "").strip():
        return AuthToken(environ[TOKEN_ENV].strip(), f"${TOKEN_ENV}")
    if environ.get(TOKEN_PATH_ENV):
        named = f"${TOKEN_PATH_ENV}={environ[TOKEN_PATH_ENV]}"
        return AuthToken(_read_token_file(Path(environ[TOKEN_PATH_ENV]), named), named)
    if environ.get(AUTH_MODE_ENV, "").lower() == "token":
        default = (home or Path.home()) / ".ray" / "auth_token"
        if not default.is_file():
            raise AnnealscaleError(
                f"{AUTH_MODE_ENV}=token but no token found: set ${TOKEN_ENV} or "
                f"${TOKEN_PATH_ENV}, write {default}, or pass --token-file"
            )
        return AuthToken(_read_token_file(default, str(default)), str(default))
    return None


def _read_token_file(path: Path, named: str) -> str:
    try:
        value = path.read_text().strip()
    except OSError as err:
        raise AnnealscaleError(f"{named}: cannot read the token file ({err.strerror})") from None
    if not value:
        raise AnnealscaleError(f"{named}: the token file is empty")
    return value


# -- the Jobs API client -------------------------------------------------------------------


def jobs_address(address: str | None, environ: Mapping[str, str]) -> str:
    """The dashboard (Jobs API) address: ``--address`` or ``$RAY_ADDRESS``, ``http(s)://``."""
    address = address or environ.get("RAY_ADDRESS")
    if not address:
        raise AnnealscaleError(
            "--address: give the Ray dashboard address, e.g. http://HEAD:8265 (or set RAY_ADDRESS)"
        )
    if not re.match(r"^https?://", address):
        raise AnnealscaleError(
            f"--address {redact(address)}: the Jobs API is the dashboard's HTTP address, e.g. "
            "http://HEAD:8265"
        )
    return address.rstrip("/")


@contextmanager
def jobs_api(address: str, token: AuthToken | None) -> Iterator:
    """A `JobSubmissionClient` whose errors reach the user as one line, token never shown."""
    from ray.exceptions import AuthenticationError

    try:
        import aiohttp  # noqa: F401 - the Jobs client's log streaming; only in ray[default]
        from ray.job_submission import JobSubmissionClient
    except ImportError:
        raise AnnealscaleError(
            "the Ray Jobs client is not installed; pip install 'annealscale[cluster]' "
            "(ray[default])"
        ) from None
    try:
        client = JobSubmissionClient(address, headers=token.headers() if token else None)
        yield client
    except AuthenticationError as err:
        if str(err).startswith("Authentication required"):
            raise AnnealscaleError(
                f"{redact(address)}: the cluster requires a token (RAY_AUTH_MODE=token); set "
                f"${TOKEN_ENV} or ${TOKEN_PATH_ENV}, or pass --token-file"
            ) from None
        raise AnnealscaleError(
            f"{redact(address)}: the cluster rejected the token from {token.source if token else '?'}"
            "; use the token the cluster was started with"
        ) from None
    except ConnectionError:
        raise AnnealscaleError(
            f"{redact(address)}: cannot reach the Ray Jobs API; check the address (the dashboard "
            "port, 8265 by default) and that the cluster is up"
        ) from None
    except RuntimeError as err:
        message = str(err)
        if "status code 404" in message:
            raise AnnealscaleError(
                f"{redact(address)}: no such job; list jobs with `ray job list`"
            ) from None
        first = message.strip().splitlines()[0] if message.strip() else type(err).__name__
        raise AnnealscaleError(redact(f"{address}: the Jobs API answered: {first[:300]}")) from None


# -- what to submit ------------------------------------------------------------------------


@dataclass(frozen=True)
class Submission:
    """One sweep as a Ray job: everything `JobSubmissionClient.submit_job` receives."""

    submission_id: str
    entrypoint: str
    runtime_env: dict
    entrypoint_num_cpus: float | None = None
    entrypoint_num_gpus: float | None = None
    entrypoint_memory: int | None = None
    """Bytes reserved for the sweep's driver."""
    metadata: dict = field(default_factory=dict)


def plan_submission(
    spec_path: str | Path,
    *,
    out: str,
    working_dir: str | Path = ".",
    requirements: str | Path | None = None,
    env: Mapping[str, str] | None = None,
    submission_id: str | None = None,
    num_cpus: float | None = None,
    num_gpus: float | None = None,
    memory: int | None = None,
    analyze: bool = True,
    allow_secret_env: bool = False,
) -> Submission:
    """Validate the spec here, before anything reaches the cluster, and build the job.

    The default submission id is a hash of the spec and ``--out``: submitting the same
    sweep twice finds the first job instead of starting a second one writing the same table.
    """
    from annealscale.cluster.storage_check import is_local_path
    from annealscale.core.hashing import content_hash
    from annealscale.tune.spec import load_spec

    if not os.path.isabs(out):
        raise AnnealscaleError(
            f"--out {out}: give an absolute path on storage the cluster keeps (the job runs "
            "in a temporary copy of the working directory)"
        )
    env = dict(env or {})
    for name in SECRET_ENV_NAMES:
        if name in env:
            raise AnnealscaleError(
                f"--env {name}: never pass the token to the job; the cluster stores a job's "
                "environment in its job table, and its nodes already hold the token"
            )
    secret = sorted(name for name in env if looks_secret(name))
    if secret and not allow_secret_env:
        raise AnnealscaleError(
            f"--env {', '.join(secret)}: looks like a secret, and the cluster keeps a job's "
            "environment in its job table, readable by anyone who can list jobs; give it to "
            "the cluster's nodes instead (a Kubernetes secret, the node image), or pass "
            "--allow-secret-env if it is not one (see docs/security.md)"
        )
    spec = load_spec(spec_path)
    if is_local_path(spec.storage_path) and not os.path.isabs(spec.storage_path):
        log.warning(
            "storage_path %s is relative: on the cluster it lands in the job's temporary "
            "copy of the working directory (pools and checkpoints are lost with it); use an "
            "absolute path on shared storage",
            spec.storage_path,
        )
    working_dir = Path(working_dir).resolve()
    if not working_dir.is_dir():
        raise AnnealscaleError(f"--working-dir {working_dir}: not a directory")
    spec_file = Path(spec_path).resolve()
    if not spec_file.is_relative_to(working_dir):
        raise AnnealscaleError(
            f"{spec_path}: the spec must be inside the uploaded working directory "
            f"{working_dir}; move it there or pass --working-dir"
        )
    runtime_env: dict = {
        "working_dir": str(working_dir),
        "excludes": list(WORKING_DIR_EXCLUDES) + _own_sources_in(working_dir),
        "py_modules": [str(stage_package())],
    }
    if env:
        runtime_env["env_vars"] = env
    if requirements is not None:
        runtime_env["pip"] = _requirements(Path(requirements))
    args = [
        "python",
        "-m",
        "annealscale.cluster.cli",
        "sweep",
        str(spec_file.relative_to(working_dir)),
    ]
    args += ["--out", out] + ([] if analyze else ["--no-analyze"])
    if submission_id is None:
        submission_id = (
            f"annealscale-{_slug(spec.name)}-{content_hash({'spec': spec, 'out': out}, 10)}"
        )
    return Submission(
        submission_id=submission_id,
        entrypoint=shlex.join(args),
        runtime_env=runtime_env,
        entrypoint_num_cpus=num_cpus,
        entrypoint_num_gpus=num_gpus,
        entrypoint_memory=memory,
        metadata={"annealscale_spec": spec.name, "annealscale_out": out},
    )


PACKAGE_PARTS = ("core", "cluster", "tune", "anneal", "analysis", "examples")
"""Subpackages of annealscale; in an editable install they live in separate folders."""


def stage_package(root: Path | None = None) -> Path:
    """A copy of the annealscale package this process imports, as one folder Ray's
    ``py_modules`` can upload: a wheel install already is one; an editable install maps
    the subpackages from the repository's top-level folders, which are gathered here.
    The copy is removed when this process exits unless ``root`` is given."""
    if root is None:
        root = Path(tempfile.mkdtemp(prefix="annealscale-job-"))
        atexit.register(shutil.rmtree, root, ignore_errors=True)
    skip = shutil.ignore_patterns("__pycache__", "*.pyc")
    package = _package_dir("annealscale")
    target = root / "annealscale"
    shutil.copytree(package, target, ignore=skip, dirs_exist_ok=True)
    for part in PACKAGE_PARTS:
        source = _package_dir(f"annealscale.{part}")
        if source.parent != package:  # an editable install: the folder is elsewhere
            shutil.copytree(source, target / part, ignore=skip, dirs_exist_ok=True)
    return target


def _own_sources_in(working_dir: Path) -> list[str]:
    """Excludes for annealscale's own source folders when the working directory is the
    checkout this process imports from: the job runs ``python -m`` there, and a partial
    ``annealscale/`` folder in its directory would hide the staged package."""
    package = _package_dir("annealscale")
    if package.parent != working_dir:
        return []
    parts = [p for p in PACKAGE_PARTS if _package_dir(f"annealscale.{p}").parent == working_dir]
    return ["/annealscale/", *(f"/{_package_dir(f'annealscale.{p}').name}/" for p in parts)]


def _package_dir(name: str) -> Path:
    found = importlib.util.find_spec(name)
    return Path(next(iter(found.submodule_search_locations)))


def _requirements(path: Path) -> list[str]:
    if not path.is_file():
        raise AnnealscaleError(f"--requirements {path}: file not found")
    lines = [ln.split("#", 1)[0].strip() for ln in path.read_text().splitlines()]
    return [ln for ln in lines if ln]


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "-", name).strip("-")[:40] or "sweep"


REUSABLE = {"PENDING", "RUNNING", "SUCCEEDED"}


def submit(client, submission: Submission) -> tuple[str, bool]:
    """Submit unless a job with this id exists; return ``(id, submitted_now)``.

    A job with the id that is pending, running or succeeded is the same sweep: it is
    reported, not started again. One that failed or was stopped needs a new id.
    """
    existing = _job_status_or_none(client, submission.submission_id)
    if existing in REUSABLE:
        return submission.submission_id, False
    if existing is not None:
        raise AnnealscaleError(
            f"submission id {submission.submission_id}: a job with this id ended {existing}; "
            "pass --submission-id NEW to run the sweep again (finished cells are reused)"
        )
    deadline = time.monotonic() + AGENT_WAIT_S
    while True:
        try:
            client.submit_job(
                entrypoint=submission.entrypoint,
                submission_id=submission.submission_id,
                runtime_env=submission.runtime_env,
                metadata=submission.metadata,
                entrypoint_num_cpus=submission.entrypoint_num_cpus,
                entrypoint_num_gpus=submission.entrypoint_num_gpus,
                entrypoint_memory=submission.entrypoint_memory,
            )
            return submission.submission_id, True
        except RuntimeError as err:
            if NO_AGENT not in str(err) or time.monotonic() > deadline:
                raise
            log.warning("the head's job agent is not up yet; retrying the submission")
            time.sleep(2.0)


AGENT_WAIT_S = 90.0
"""How long a submission waits for the head's job agent, which starts after the dashboard
answers: a cluster started moments ago (or a busy head) says "No available agent"."""
NO_AGENT = "No available agent to submit job"


def _job_status_or_none(client, job_id: str) -> str | None:
    try:
        return str(client.get_job_status(job_id))
    except RuntimeError as err:
        if "status code 404" in str(err):
            return None
        raise


def follow_logs(client, job_id: str, write: Callable[[str], object]) -> str:
    """Stream the job's logs until it ends; return its final status."""

    async def tail() -> None:
        async for chunk in client.tail_job_logs(job_id):
            write(chunk)

    asyncio.run(tail())
    return str(client.get_job_status(job_id))


# -- the commands --------------------------------------------------------------------------


def add_job_commands(sub) -> None:
    """Register ``submit`` and ``jobs`` on the CLI's subparsers."""
    submit_parser = sub.add_parser(
        "submit", help="run a sweep on a Ray cluster through the Ray Jobs API"
    )
    submit_parser.add_argument("spec", help="experiment spec (YAML) inside the working directory")
    _connection_args(submit_parser)
    submit_parser.add_argument(
        "--out", required=True, help="results directory on the cluster (absolute path)"
    )
    submit_parser.add_argument(
        "--working-dir", default=".", help="directory uploaded with the job (default: .)"
    )
    submit_parser.add_argument(
        "--requirements", help="pip requirements file installed in the job's environment"
    )
    submit_parser.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="environment variable for the job (not for secrets: names such as *_TOKEN, "
        "*_KEY or *PASSWORD* are refused)",
    )
    submit_parser.add_argument(
        "--allow-secret-env",
        action="store_true",
        help="pass --env names that look like secrets anyway (they are stored in the "
        "cluster's job table)",
    )
    submit_parser.add_argument("--submission-id", help="default: a hash of the spec and --out")
    submit_parser.add_argument(
        "--entrypoint-num-cpus", type=positive_float, help="CPUs for the driver"
    )
    submit_parser.add_argument(
        "--entrypoint-num-gpus", type=positive_float, help="GPUs for the driver"
    )
    submit_parser.add_argument(
        "--entrypoint-memory", type=positive_int, help="memory for the driver (bytes)"
    )
    submit_parser.add_argument("--no-analyze", action="store_true", help="skip the report")
    submit_parser.add_argument(
        "--follow", action="store_true", help="stream the logs until the job ends"
    )
    submit_parser.set_defaults(func=_cmd_submit)

    jobs = sub.add_parser("jobs", help="status, logs or stop of a submitted sweep")
    actions = jobs.add_subparsers(required=True, metavar="ACTION")
    for name, func, text in (
        ("status", _cmd_status, "print the job's status"),
        ("logs", _cmd_logs, "print the job's logs"),
        ("stop", _cmd_stop, "stop the job (finished cells stay in the results)"),
    ):
        action = actions.add_parser(name, help=text)
        action.add_argument("job_id", metavar="ID", help="submission id")
        _connection_args(action)
        if name == "logs":
            action.add_argument("--follow", action="store_true", help="until the job ends")
        action.set_defaults(func=func)


def _connection_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--address", help="Ray dashboard address (default: $RAY_ADDRESS)")
    parser.add_argument("--token-file", help="file holding the cluster's token")


def _connect_args(args) -> tuple[str, AuthToken | None]:
    return jobs_address(args.address, os.environ), find_token(args.token_file, os.environ)


def _parse_env(pairs: list[str]) -> dict[str, str]:
    env = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise AnnealscaleError(f"--env {pair}: expected NAME=VALUE")
        env[name] = value
    return env


def _cmd_submit(args) -> int:
    address, token = _connect_args(args)
    submission = plan_submission(
        args.spec,
        out=args.out,
        working_dir=args.working_dir,
        requirements=args.requirements,
        env=_parse_env(args.env),
        submission_id=args.submission_id,
        num_cpus=args.entrypoint_num_cpus,
        num_gpus=args.entrypoint_num_gpus,
        memory=args.entrypoint_memory,
        analyze=not args.no_analyze,
        allow_secret_env=args.allow_secret_env,
    )
    with jobs_api(address, token) as client:
        job_id, now = submit(client, submission)
        print(f"{'submitted' if now else 'already submitted'}: {job_id}", flush=True)
        if not args.follow:
            print(
                f"follow it with: annealscale jobs logs {job_id} --address {redact(address)} --follow"
            )
            return 0
        status = follow_logs(client, job_id, _write)
    print(f"job {job_id}: {status}")
    return 0 if status == "SUCCEEDED" else 1


def _cmd_status(args) -> int:
    address, token = _connect_args(args)
    with jobs_api(address, token) as client:
        info = client.get_job_info(args.job_id)
    print(f"{args.job_id}: {info.status}" + (f" ({info.message})" if info.message else ""))
    return 0


def _cmd_logs(args) -> int:
    address, token = _connect_args(args)
    with jobs_api(address, token) as client:
        if args.follow:
            status = follow_logs(client, args.job_id, _write)
            print(f"job {args.job_id}: {status}")
        else:
            _write(client.get_job_logs(args.job_id))
    return 0


def _cmd_stop(args) -> int:
    address, token = _connect_args(args)
    with jobs_api(address, token) as client:
        stopped = client.stop_job(args.job_id)
    print(f"{args.job_id}: {'stop requested' if stopped else 'already ended'}")
    return 0


def _write(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()
