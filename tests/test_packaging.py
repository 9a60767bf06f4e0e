"""Packaging: a fast, offline `import impure`, the console script, the README's commands, the example."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import impure

ROOT = Path(__file__).resolve().parents[1]

# Prepended to subprocess code: any attempt to open a network connection or resolve a name raises.
NETWORK_GUARD = """
import socket

def _refuse(*args, **kwargs):
    raise RuntimeError(f"network access attempted: {args!r}")

socket.socket.connect = _refuse
socket.socket.connect_ex = _refuse
socket.create_connection = _refuse
socket.getaddrinfo = _refuse
"""

# Libraries that `import impure` must not load: optional or heavy ones, needed only by sub-packages.
NOT_AT_IMPORT = ("lpips", "matplotlib", "requests", "timm", "torchattacks", "torchvision")


def _run_python(code: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {**os.environ}
    env.pop("HF_HUB_OFFLINE", None)  # the import must stay offline without being told to
    return subprocess.run([sys.executable, "-c", NETWORK_GUARD + code], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


def _setup_commands() -> list[str]:
    """The shell commands in the first code block of the README's "Set-up" section."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = re.search(r"^## Set-up\n(.*?)(?=^## )", readme, flags=re.S | re.M)
    assert section, "README.md has no '## Set-up' section"
    block = re.search(r"```(?:bash|sh|shell)?\n(.*?)```", section.group(1), flags=re.S)
    assert block, "the README's Set-up section has no code block"
    return [line.strip() for line in block.group(1).splitlines() if line.strip()]


def test_import_is_fast_offline_and_light():
    code = (
        "import sys, time\n"
        "import torch\n"
        "start = time.perf_counter()\n"
        "import impure\n"
        "print(time.perf_counter() - start)\n"
        f"print([name for name in {NOT_AT_IMPORT!r} if name in sys.modules])\n"
    )
    result = _run_python(code)
    assert result.returncode == 0, result.stderr
    seconds, loaded = result.stdout.splitlines()[-2:]
    assert loaded == "[]", f"`import impure` loaded {loaded}; import them where they are used"
    # impure's own share of the import time, beyond torch's (about 0.2 s on 2 CPU cores).
    assert float(seconds) < 1.5, f"`import impure` took {float(seconds):.2f} s beyond importing torch"


def test_console_script_help():
    script = Path(sys.executable).parent / ("impure.exe" if os.name == "nt" else "impure")
    assert script.is_file(), f"no `impure` console script beside {sys.executable}; run `pip install -e .`"
    result = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: impure")
    assert "convert-reference" in result.stdout


def test_readme_setup_is_two_commands_and_ci_runs_the_test_command():
    commands = _setup_commands()
    assert len(commands) == 2, f"the README's Set-up must be two commands, found {commands}"
    main_job, tests = commands
    # The CPU route first: torch and torchvision as one pair from PyTorch's CPU index (tests/test_demo.py runs the
    # demo itself); the test command pins no torch of its own, so it never swaps a CPU build for a CUDA one.
    cpu_pair = "pip install torch torchvision --index-url https://download.pytorch.org/whl/cpu"
    assert main_job == f"{cpu_pair} && pip install . && impure demo", main_job
    assert "pytest" in tests and tests.startswith("pip install "), tests
    assert not re.search(r"\btorch(vision)?(==|>|<|~| |$)", tests), f"the test command must not install torch: {tests}"
    ci = ROOT / ".ci" / "run"
    assert os.access(ci, os.X_OK), ".ci/run must be executable"
    ci_lines = [line.strip() for line in ci.read_text(encoding="utf-8").splitlines()]
    assert "python3 -m venv" in " ".join(ci_lines), ".ci/run must create its own virtual environment"
    assert tests in ci_lines, f".ci/run must run the README's test command verbatim:\n{tests}"


def test_versions_agree():
    citation = (ROOT / "CITATION.cff").read_text(encoding="utf-8")
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    assert f"\nversion: {impure.__version__}\n" in citation
    assert f'\nversion = "{impure.__version__}"\n' in pyproject
    assert "2311.15339" in citation


@pytest.mark.slow
def test_quickstart_example_runs_offline():
    result = _run_python(
        "import runpy\nrunpy.run_path('examples/quickstart.py', run_name='__main__')\n", timeout=300
    )
    assert result.returncode == 0, result.stderr
    assert "20 CIFAR-10 test images shipped with impure" in result.stdout, result.stdout
    for row in ("bare classifier, clean", "bare classifier, PGD", "through the purifier, clean",
                "through the purifier, PGD"):
        assert re.search(rf"{row} images +\d+%", result.stdout), result.stdout
    # Seeded: on the CPU it prints what docs/quickstart.md says it prints.
    docs = (ROOT / "docs" / "quickstart.md").read_text(encoding="utf-8")
    expected = docs.split("<!-- quickstart-output -->\n```text\n", 1)[1].split("```", 1)[0]
    assert result.stdout.strip().splitlines()[-5:] == expected.strip().splitlines()


def _imports(path: Path) -> set[str]:
    """Every module a file imports (at any depth; relative imports resolved), except under TYPE_CHECKING."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    parts = list(path.relative_to(ROOT / "src").with_suffix("").parts)
    package = parts if path.name == "__init__.py" else parts[:-1]
    guarded = [node for node in ast.walk(tree)
               if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)]
    skipped = {id(n) for node in guarded for n in ast.walk(node)}
    names = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            names.add(".".join(base + ([node.module] if node.module else [])))
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


def test_layers_point_one_way():
    """Training, attacks, classifiers and the model never import the evaluation; plots never imports report."""
    source = ROOT / "src" / "impure"
    for layer in ("training", "attacks", "classifiers", "model"):
        for path in (source / layer).rglob("*.py"):
            offending = sorted(name for name in _imports(path) if name.startswith("impure.evaluation"))
            assert not offending, f"{path.relative_to(ROOT)} imports {offending}"
    assert "impure.evaluation.report" not in _imports(source / "evaluation" / "plots.py")


def test_cli_turns_user_mistakes_into_one_line_errors_and_lets_bugs_show(tmp_path, capsys, monkeypatch):
    from impure.cli import main
    from impure.cli import purify as purify_command

    assert main(["purify", str(tmp_path / "missing.png"), "-o", str(tmp_path / "out")]) == 1
    assert capsys.readouterr().err.strip().startswith("impure purify: error: no such file or folder")

    def bug(args):
        raise TypeError("an internal bug")

    monkeypatch.setattr(purify_command, "run", bug)
    with pytest.raises(TypeError, match="an internal bug"):
        main(["purify", str(tmp_path), "-o", str(tmp_path / "out")])


def test_the_bundled_weights_are_the_only_weights_in_git():
    listed = subprocess.run(["git", "ls-files", "*.safetensors", "*.pt", "*.pth", "*.bin", "*.ckpt"], cwd=ROOT,
                            capture_output=True, text=True)
    if listed.returncode != 0:
        pytest.skip(f"not a git checkout: {listed.stderr.strip()}")
    weights = listed.stdout.split()
    assert weights, "git lists no weights at all: the bundled ones are missing"
    stray = [path for path in weights if not path.startswith("src/impure/weights/")]
    assert not stray, f"weights outside src/impure/weights/ are committed (keep them git-ignored): {stray}"
