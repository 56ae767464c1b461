"""deploy/Dockerfile, checked without docker: its instructions, and its install step rehearsed."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from .conftest import DOCKERFILE, REPO, SERVICES, import_apps, module_source


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with line continuations joined and comments dropped."""
    out: list[tuple[str, str]] = []
    buf = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        line = buf + line
        buf = ""
        word, _, rest = line.partition(" ")
        out.append((word.upper(), rest.strip()))
    return out


def test_base_image_and_install_step() -> None:
    ins = _instructions()
    assert ins[0] == ("FROM", "python:3.11-slim")
    runs = [args for word, args in ins if word == "RUN"]
    assert any("uv sync --frozen --no-dev" in r for r in runs)
    assert any(r.startswith("pip install") and "uv" in r for r in runs)
    workdir = [args for word, args in ins if word == "WORKDIR"]
    env = " ".join(args for word, args in ins if word == "ENV")
    assert workdir and f"{workdir[-1]}/.venv/bin" in env, "the venv must be on PATH"
    assert [args for word, args in ins if word == "USER"] != [], "run as a non-root user"
    assert [word for word, _ in ins].count("CMD") == 1


def test_copy_sources_exist_and_cover_every_workspace_member() -> None:
    copied: set[str] = set()
    for word, args in _instructions():
        if word != "COPY":
            continue
        parts = [p for p in shlex.split(args) if not p.startswith("--")]
        for src in parts[:-1]:
            assert (REPO / src).exists(), f"COPY source {src} does not exist in the repo"
            copied.add(src.rstrip("/"))
    assert {"pyproject.toml", "uv.lock"} <= copied
    for _, _, src in SERVICES.values():
        top = src.split("/")[0]
        assert top in copied, f"{src} is not copied into the image"


def test_dockerignore_keeps_local_state_out() -> None:
    ignore = (DOCKERFILE.parent / "Dockerfile.dockerignore").read_text().split()
    for pattern in ("**/.venv", ".git", ".state", "**/__pycache__"):
        assert pattern in ignore


def _uv() -> str:
    uv = shutil.which("uv")
    if uv is None:
        pytest.skip("uv is not on PATH (the workspace is managed with uv; install it)")
    return uv


def test_lock_is_in_step_with_every_pyproject() -> None:
    """The image installs with --frozen: a stale uv.lock would ship without new dependencies."""
    result = subprocess.run(
        [_uv(), "lock", "--check"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "UV_PYTHON_DOWNLOADS": "never"},
    )
    assert result.returncode == 0, f"uv.lock is out of date: run `uv lock`\n{result.stderr}"


def test_image_install_step_rehearsed_without_docker(tmp_path: Path) -> None:
    """Do what the Dockerfile does (copy, `uv sync --frozen --no-dev`) and import the apps."""
    uv = _uv()
    ctx = tmp_path / "app"
    ctx.mkdir()
    ignore = shutil.ignore_patterns(
        ".venv", "__pycache__", "*.pyc", ".pytest_cache", ".mypy_cache", ".ruff_cache"
    )
    for word, args in _instructions():
        if word != "COPY":
            continue
        *sources, dest = shlex.split(args)
        for src in sources:
            path = REPO / src
            target = ctx / dest if dest not in ("./", ".") else ctx
            if path.is_dir():
                shutil.copytree(path, target, ignore=ignore)
            else:
                target.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, target / path.name)
    venv = tmp_path / "venv"
    env = {
        **os.environ,
        "UV_PROJECT_ENVIRONMENT": str(venv),
        "UV_PYTHON_DOWNLOADS": "never",
        "UV_LINK_MODE": "hardlink",
    }
    env.pop("VIRTUAL_ENV", None)
    result = subprocess.run(
        [uv, "sync", "--frozen", "--no-dev", "--python", "python3.11"],
        cwd=ctx,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    python = str(venv / "bin" / "python")

    freeze = subprocess.run(
        [
            python,
            "-c",
            "import importlib.util as u; print([m for m in "
            "('pytest', 'hypothesis', 'ruff', 'mypy') if u.find_spec(m)])",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert freeze.stdout.strip() == "[]", f"dev tools leaked into the image: {freeze.stdout}"
    assert (venv / "bin" / "uvicorn").exists(), "uvicorn (the command of every service) missing"

    written = [app for app, _, src in SERVICES.values() if module_source(app, src).exists()]
    assert "custodian_sim.main:app" in written
    assert import_apps(written, {"PYTHONPATH": ""}, python=python) == {}
