"""Checkpoints shared by the engine tests (one per test module, as before)."""
import pytest

from engine_support import mixing_checkpoint
from loopcoder.model_server.plt.checkpoint import init_checkpoint


@pytest.fixture(scope="module")
def plt_checkpoint(tmp_path_factory):
    return init_checkpoint(tmp_path_factory.mktemp("plt"), "tiny", seed=3)


@pytest.fixture(scope="module")
def v1_checkpoint(tmp_path_factory):
    return init_checkpoint(tmp_path_factory.mktemp("v1"), "iquest-v1-tiny", seed=4)


@pytest.fixture(scope="module")
def plt_mixing(tmp_path_factory):
    """Gates spread 0.05-0.95 and carry scale 1: every gate, norm and carry matters (engine_support)."""
    return mixing_checkpoint(tmp_path_factory.mktemp("plt-mix"), "tiny", seed=21)


@pytest.fixture(scope="module")
def v1_mixing(tmp_path_factory):
    return mixing_checkpoint(tmp_path_factory.mktemp("v1-mix"), "iquest-v1-tiny", seed=22)
