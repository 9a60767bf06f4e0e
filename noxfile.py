"""Developer sessions: `nox -s tests`, `nox -s lint`, `nox -s docs` (each in its own virtual environment)."""

from __future__ import annotations

import os

import nox

nox.options.sessions = ["lint", "docs", "tests"]
nox.options.reuse_existing_virtualenvs = True

# The torch build this project is tested with; installing it first keeps pip from resolving another.
TORCH = ("torch==2.14.1", "torchvision==0.29.1")
# Paths ruff checks; the same list the README and CONTEXT give.
LINT_PATHS = ("src", "tests", "benchmarks", "examples", "noxfile.py")

_OPTIONAL = nox.project.load_toml("pyproject.toml")["project"]["optional-dependencies"]


@nox.session
def tests(session: nox.Session) -> None:
    """Install the package with its test extras and run pytest (arguments after `--` go to pytest)."""
    session.install(*TORCH)
    session.install(".[test]")
    # torchattacks is the outside reference the attack tests compare with; its metadata pins an
    # outdated `requests`, so it is installed without dependencies (it needs only torch, numpy, scipy).
    session.install("--no-deps", "torchattacks")
    session.run("python", "-m", "pytest", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """Run ruff over the code (config in pyproject.toml)."""
    session.install(*_OPTIONAL["lint"])
    session.run("ruff", "check", *LINT_PATHS, *session.posargs)


@nox.session
def docs(session: nox.Session) -> None:
    """Build the documentation site with strict link checking (mkdocs.yml sets what counts as an error)."""
    session.install(*_OPTIONAL["docs"])
    site = os.path.join(session.create_tmp(), "site")
    session.run("mkdocs", "build", "--strict", "--clean", "--site-dir", site, *session.posargs)
