import pytest
import torch

# Threads: OMP_NUM_THREADS's (make test: one per worker). Two per worker on two cores oversubscribed
# them: the in-process statistical tests ran up to 6x slower (tmpd's posterior test 70 s, 11 s now) and
# `make test` took 9.6 min, 7.2 min now.


@pytest.fixture(autouse=True, scope="session")
def _index_cache(tmp_path_factory):
    """Folder and shard indices in a cache of the test session's own (the commands' subprocesses inherit
    it), not the user's, and outside every test's folder."""
    import os

    os.environ["DIFFKIT_CACHE"] = str(tmp_path_factory.mktemp("cache"))


@pytest.fixture
def gen():
    return torch.Generator().manual_seed(0)
