"""Shared pytest set-up: no network, no wandb account, small thread counts, deterministic seeds."""

import os
import tempfile

_TMP = tempfile.mkdtemp(prefix="audiognn-tests-")
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("WANDB_DIR", _TMP)
os.environ.setdefault("WANDB_CACHE_DIR", _TMP)
os.environ.setdefault("WANDB_CONFIG_DIR", _TMP)
os.environ.setdefault("WANDB_SILENT", "true")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)  # small ops (PyG, tiny models) are faster single-threaded; no oversubscription


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield
