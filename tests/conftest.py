import pytest
import torch

torch.set_num_threads(2)


@pytest.fixture(autouse=True, scope="session")
def _index_cache(tmp_path_factory):
    """Folder and shard indices in a cache of the test session's own (the commands' subprocesses inherit
    it), not the user's, and outside every test's folder."""
    import os

    os.environ["DIFFKIT_CACHE"] = str(tmp_path_factory.mktemp("cache"))


@pytest.fixture
def gen():
    return torch.Generator().manual_seed(0)
