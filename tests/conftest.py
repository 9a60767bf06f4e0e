"""Shared fixtures: the read-only `../shared` material, skipped in a user's checkout, required in CI."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

SHARED = Path(__file__).resolve().parents[1].parent / "shared"


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """The `../shared` folder; a clear skip without it, a failure under CI=true."""
    if not SHARED.is_dir():
        message = f"../shared not found at {SHARED}: tests that need the shared data and models cannot run"
        if _in_ci():
            pytest.fail(message + " (CI=true requires it)")
        pytest.skip(message)
    return SHARED


@pytest.fixture(autouse=True)
def _seed_and_threads():
    torch.manual_seed(0)
    yield
