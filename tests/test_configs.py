import pytest
from pydantic import BaseModel, ConfigDict

from loopcoder.configs import ConfigError, load_config


class Inner(BaseModel):
    model_config = ConfigDict(extra="forbid")
    num_loops: int = 2
    name: str = "x"


class Outer(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: Inner = Inner()
    steps: int = 10


def test_file_then_overrides(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("model:\n  num_loops: 3\nsteps: 5\n")
    cfg = load_config(Outer, f, ["model.name=abc", "steps=7"])
    assert (cfg.model.num_loops, cfg.model.name, cfg.steps) == (3, "abc", 7)


def test_unknown_key_is_one_line_naming_it(tmp_path):
    with pytest.raises(ConfigError) as e:
        load_config(Outer, None, ["model.num_lops=3"])
    assert "model.num_lops: unknown key" in str(e.value)
    assert "\n" not in str(e.value)


def test_bad_value_names_key_and_value():
    with pytest.raises(ConfigError, match=r"steps: .*integer.*got 'many'"):
        load_config(Outer, None, ["steps=many"])


def test_malformed_override_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="expected key=value"):
        load_config(Outer, None, ["steps"])
    with pytest.raises(ConfigError, match="not found"):
        load_config(Outer, tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("- a list\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(Outer, bad)
