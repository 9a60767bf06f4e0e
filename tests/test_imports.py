"""What the light entry points load, and a torch / torchvision pair from different releases caught on first use."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
import torch

from impure._util.versions import import_torchvision, matching_torchvision

HEAVY = ("torchvision", "timm", "lpips")


@pytest.mark.parametrize("code", ["import impure", "from impure.cli import main\nmain(['--help'])",
                                  "from impure.cli import main\nmain([])"])
def test_import_and_the_command_list_load_neither_torchvision_nor_timm_nor_lpips(code):
    """`import impure` and `impure --help` (what a broken torchvision used to crash) stay clear of them."""
    script = (f"import sys\ntry:\n    exec({code!r})\nexcept SystemExit:\n    pass\n"
              f"print(sorted({{m.split('.')[0] for m in sys.modules}} & set({HEAVY!r})))")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "[]"


def test_torch_and_torchvision_release_series_pair_up():
    assert matching_torchvision("2.14.1") == "0.29"
    assert matching_torchvision("2.5.1+cpu") == "0.20"
    assert matching_torchvision("3.0.0") is None


def test_a_torchvision_that_fails_to_import_names_both_versions_and_the_fix(monkeypatch):
    monkeypatch.setitem(sys.modules, "torchvision", None)  # `import torchvision` raises, as a broken build does
    release = torch.__version__.split("+")[0]
    with pytest.raises(ImportError, match="cannot be imported beside torch " + re.escape(torch.__version__)) as caught:
        import_torchvision()
    assert f'pip install torch=={release} "torchvision==' in str(caught.value)
    assert "--index-url https://download.pytorch.org/whl/cpu" in str(caught.value)


def test_a_torchvision_of_another_release_is_refused_on_first_use(monkeypatch):
    torchvision = import_torchvision()
    monkeypatch.setattr(torchvision, "__version__", "0.1.0")
    with pytest.raises(ImportError, match=re.escape(f"torch {torch.__version__} and torchvision 0.1.0 do not match")):
        import_torchvision()
