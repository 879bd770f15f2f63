import pytest
import torch

torch.set_num_threads(2)


def pytest_collection_modifyitems(config, items):
    # Deterministic order of statistical tests: every test seeds its own generator.
    pass


@pytest.fixture
def gen():
    return torch.Generator().manual_seed(0)
