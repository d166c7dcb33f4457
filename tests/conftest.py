import numpy as np
import pytest

import mmf


@pytest.fixture
def tiny_config():
    """Small for testing efficiency: every code path, milliseconds per step."""
    return mmf.MMfreeConfig(vocab_size=32, hidden_size=16, num_layers=2, intermediate_size=32)


@pytest.fixture
def rng():
    return np.random.default_rng(1234)
