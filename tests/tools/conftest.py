import pytest

from loopcoder.tools.config import ToolsConfig
from loopcoder.tools.toolbox import Toolbox


@pytest.fixture
def make_toolbox(tmp_path):
    """Write ``files`` into a fresh workspace and return a Toolbox on it (tag cache under tmp_path)."""

    def make(files: dict[str, str | bytes], **kwargs) -> Toolbox:
        root = tmp_path / "ws"
        root.mkdir(exist_ok=True)
        for rel, content in files.items():
            p = root / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(content, bytes):
                p.write_bytes(content)
            else:
                p.write_text(content)
        config = kwargs.pop("config", None) or ToolsConfig()
        config.repo_map.cache_dir = tmp_path / "cache"
        return Toolbox(root, config, **kwargs)

    return make
