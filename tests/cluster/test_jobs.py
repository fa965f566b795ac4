"""What `annealscale submit` sends and where its token comes from (no cluster needed; the
real submission against a token-protected head is tests/cluster/test_submit_e2e.py)."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest
import yaml

from annealscale.cluster.cli import EXAMPLES, main
from annealscale.cluster.jobs import (
    WORKING_DIR_EXCLUDES,
    AuthToken,
    find_token,
    jobs_address,
    plan_submission,
)
from annealscale.core.errors import AnnealscaleError

# -- the token -----------------------------------------------------------------------------


def test_token_file_flag_wins_over_the_environment(tmp_path):
    path = tmp_path / "t"
    path.write_text("from-file\n")
    token = find_token(str(path), {"RAY_AUTH_TOKEN": "from-env"}, home=tmp_path)
    assert token.value == "from-file" and token.source == f"--token-file {path}"


def test_ray_order_env_then_path_then_default_file_in_token_mode(tmp_path):
    path = tmp_path / "t"
    path.write_text("from-path")
    (tmp_path / ".ray").mkdir()
    (tmp_path / ".ray" / "auth_token").write_text("from-default")
    both = {"RAY_AUTH_TOKEN": "from-env", "RAY_AUTH_TOKEN_PATH": str(path)}
    assert find_token(None, both, home=tmp_path).value == "from-env"
    assert find_token(None, {"RAY_AUTH_TOKEN_PATH": str(path)}, home=tmp_path).value == (
        "from-path"
    )
    assert find_token(None, {"RAY_AUTH_MODE": "token"}, home=tmp_path).value == "from-default"
    # without token mode the default file is not sent to clusters that did not ask for it
    assert find_token(None, {}, home=tmp_path) is None


def test_token_mode_without_a_token_names_the_ways_to_give_one(tmp_path):
    with pytest.raises(AnnealscaleError, match="RAY_AUTH_MODE=token but no token found"):
        find_token(None, {"RAY_AUTH_MODE": "token"}, home=tmp_path)


@pytest.mark.parametrize("content", [None, "  \n"])
def test_unreadable_or_empty_token_file_is_an_error_not_a_silent_fallback(tmp_path, content):
    path = tmp_path / "t"
    if content is not None:
        path.write_text(content)
    with pytest.raises(AnnealscaleError, match=r"RAY_AUTH_TOKEN_PATH=.*token file"):
        find_token(None, {"RAY_AUTH_TOKEN_PATH": str(path), "RAY_AUTH_TOKEN": ""}, home=tmp_path)


def test_token_value_is_not_in_its_repr():
    token = AuthToken("s3cr3t-value", "$RAY_AUTH_TOKEN")
    assert "s3cr3t-value" not in repr(token) and "s3cr3t-value" not in str(token)
    assert token.headers() == {"Authorization": "Bearer s3cr3t-value"}


def test_jobs_address_needs_the_dashboard_http_address():
    assert jobs_address(None, {"RAY_ADDRESS": "http://h:8265/"}) == "http://h:8265"
    with pytest.raises(AnnealscaleError, match="http://HEAD:8265"):
        jobs_address("h:6379", {})
    with pytest.raises(AnnealscaleError, match="--address"):
        jobs_address(None, {})


# -- the submission ------------------------------------------------------------------------


@pytest.fixture
def project(tmp_path) -> Path:
    (tmp_path / "specs").mkdir()
    (tmp_path / "specs" / "demo.yaml").write_text((EXAMPLES / "demo.yaml").read_text())
    return tmp_path


def test_submission_runs_the_sweep_on_the_uploaded_spec(project):
    (project / "reqs.txt").write_text("# pinned\nsympy==1.13  # math\n\nmpmath\n")
    sub = plan_submission(
        project / "specs" / "demo.yaml",
        out="/mnt/shared/results",
        working_dir=project,
        requirements=project / "reqs.txt",
        env={"HF_HUB_OFFLINE": "1"},
        num_cpus=1,
        num_gpus=0.5,
        memory=2**30,
        analyze=False,
    )
    assert sub.entrypoint == (
        "python -m annealscale.cluster.cli sweep specs/demo.yaml --out /mnt/shared/results --no-analyze"
    )
    staged = Path(sub.runtime_env.pop("py_modules")[0])
    assert sub.runtime_env == {
        "working_dir": str(project),
        "excludes": list(WORKING_DIR_EXCLUDES),
        "env_vars": {"HF_HUB_OFFLINE": "1"},
        "pip": ["sympy==1.13", "mpmath"],
    }
    # the package travels whole, as one importable folder, whatever the install layout
    assert staged.name == "annealscale"
    for module in (
        "__init__.py",
        "core/errors.py",
        "cluster/cli.py",
        "tune/spec.py",
        "anneal/loop.py",
        "analysis/fit.py",
        "examples/demo.yaml",
    ):
        assert (staged / module).is_file(), module
    assert not list(staged.rglob("__pycache__"))
    assert (sub.entrypoint_num_cpus, sub.entrypoint_num_gpus, sub.entrypoint_memory) == (
        1,
        0.5,
        2**30,
    )


def test_submitting_from_the_checkout_uploads_the_staged_package_not_the_folders():
    """From the repository root, its partial annealscale/ folder (core only; the layers
    sit beside it) would come first on the job's sys.path and hide the staged package."""
    repo = Path(__file__).resolve().parents[2]
    sub = plan_submission(repo / "examples" / "demo.yaml", out="/r", working_dir=repo)
    excludes = sub.runtime_env["excludes"]
    for folder in ("annealscale", "cluster", "tune", "anneal", "analysis", "examples"):
        assert f"/{folder}/" in excludes
    elsewhere = plan_submission(
        repo / "examples" / "demo.yaml", out="/r", working_dir=repo / "examples"
    )
    assert not any(e.startswith("/") for e in elsewhere.runtime_env["excludes"])


def test_pip_is_optional_so_offline_clusters_need_no_index(project, caplog):
    sub = plan_submission(project / "specs" / "demo.yaml", out="/r", working_dir=project)
    assert "pip" not in sub.runtime_env and "env_vars" not in sub.runtime_env
    # demo.yaml keeps storage_path relative, which a job would lose with its temporary copy
    assert "storage_path runs/storage is relative" in caplog.text


def test_default_submission_id_is_a_hash_of_spec_and_out(project):
    spec = project / "specs" / "demo.yaml"
    first = plan_submission(spec, out="/r/a", working_dir=project).submission_id
    assert first == plan_submission(spec, out="/r/a", working_dir=project).submission_id
    assert first.startswith("annealscale-demo-math-")
    assert first != plan_submission(spec, out="/r/b", working_dir=project).submission_id
    data = yaml.safe_load(spec.read_text())
    data["grid"]["seeds"] = [0, 1]
    spec.write_text(yaml.safe_dump(data))
    assert first != plan_submission(spec, out="/r/a", working_dir=project).submission_id
    given = plan_submission(spec, out="/r/a", working_dir=project, submission_id="mine")
    assert given.submission_id == "mine"


def test_spec_outside_the_working_dir_is_rejected(project, tmp_path_factory):
    with pytest.raises(AnnealscaleError, match="must be inside the uploaded working directory"):
        plan_submission(
            project / "specs" / "demo.yaml",
            out="/r",
            working_dir=tmp_path_factory.mktemp("elsewhere"),
        )


def test_relative_out_is_rejected_because_the_job_dir_is_temporary(project):
    with pytest.raises(AnnealscaleError, match="--out runs/x: give an absolute path"):
        plan_submission(project / "specs" / "demo.yaml", out="runs/x", working_dir=project)


@pytest.mark.parametrize("name", ["RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"])
def test_the_token_cannot_be_passed_in_the_job_environment(project, name):
    with pytest.raises(AnnealscaleError, match=f"--env {name}: never pass the token"):
        plan_submission(
            project / "specs" / "demo.yaml", out="/r", working_dir=project, env={name: "x"}
        )


def test_bad_spec_fails_here_before_anything_is_sent(project):
    spec = project / "specs" / "demo.yaml"
    data = yaml.safe_load(spec.read_text())
    data["grid"]["train_tokens"] = "many"
    spec.write_text(yaml.safe_dump(data))
    with pytest.raises(AnnealscaleError, match="grid.train_tokens"):
        plan_submission(spec, out="/r", working_dir=project)


def test_excludes_keep_environments_outputs_and_caches_out_of_the_upload(tmp_path):
    """Packs a directory with Ray's own working-dir packager and these excludes."""
    from ray._private.runtime_env.packaging import create_package

    root = tmp_path / "proj"
    for name in (
        "cluster/cli.py",
        "specs/s.yaml",
        ".venv/lib/x.py",
        "runs/demo/results.parquet",
        ".git/HEAD",
        "cluster/__pycache__/cli.cpython-311.pyc",
        ".pytest_cache/v",
        ".ruff_cache/v",
        "annealscale.egg-info/PKG-INFO",
        "runs.md",
    ):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text("x")
    package = tmp_path / "pkg.zip"
    create_package(str(root), package, include_gitignore=False, excludes=list(WORKING_DIR_EXCLUDES))
    files = {n for n in zipfile.ZipFile(package).namelist() if not n.endswith("/")}
    assert files == {"cluster/cli.py", "specs/s.yaml", "runs.md"}


# -- the command line ----------------------------------------------------------------------


def test_submit_without_an_address_is_one_line(project, capsys, monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    code = main(["submit", str(project / "specs" / "demo.yaml"), "--out", "/r"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "--address" in err


def test_unreachable_jobs_api_is_one_line(project, capsys, monkeypatch):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here once closed
    monkeypatch.chdir(project)
    code = main(
        ["submit", "specs/demo.yaml", "--out", "/r", "--address", f"http://127.0.0.1:{port}"]
    )
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert "cannot reach the Ray Jobs API" in err
