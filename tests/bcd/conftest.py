"""NN-BCD tests use tiny matrices: one intra-op thread avoids thread-pool spin overhead on a shared CPU."""

import pytest
import torch


@pytest.fixture(autouse=True)
def _single_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
