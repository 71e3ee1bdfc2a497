import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def tiny_pocket_dir(tmp_path_factory):
    """A tiny pocket Qwen2.5-VL checkpoint built once per test session (random weights)."""
    from jigsaw_lib.models import TINY, build_pocket

    path = tmp_path_factory.mktemp("pocket") / "tiny"
    build_pocket(TINY, save_dir=path)
    return path
