import numpy as np
import pytest

import mmf
from mmf import gradcheck


@pytest.fixture
def tiny_config():
    """Small for testing efficiency: every code path, milliseconds per step."""
    return mmf.MMfreeConfig(vocab_size=32, hidden_size=16, num_layers=2, intermediate_size=32)


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


@pytest.fixture(scope="session")
def gradcheck_results():
    """mmf.gradcheck.run_all(seed=0), {(layer, tensor): relative error}: computed once per test session
    (~25 s), read by the gradient-check tests and the README's summary line. Read-only."""
    return gradcheck.run_all(seed=0)


@pytest.fixture(scope="session")
def rwkv4_gradcheck_results():
    """mmf.gradcheck.run_rwkv4(seed=0), computed once per test session. Read-only."""
    return gradcheck.run_rwkv4(seed=0)
