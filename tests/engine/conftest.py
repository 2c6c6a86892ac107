"""Checkpoints shared by the engine tests (one per test module, as before)."""
import pytest

from loopcoder.model_server.plt.checkpoint import init_checkpoint


@pytest.fixture(scope="module")
def plt_checkpoint(tmp_path_factory):
    return init_checkpoint(tmp_path_factory.mktemp("plt"), "tiny", seed=3)


@pytest.fixture(scope="module")
def v1_checkpoint(tmp_path_factory):
    return init_checkpoint(tmp_path_factory.mktemp("v1"), "iquest-v1-tiny", seed=4)
