"""The package layout promised by architecture.md: one namespace, every package listed in pyproject."""
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TOP = ["agent", "tools", "runtime", "model_server", "scenarios", "configs"]


def test_every_package_folder_is_listed_in_pyproject():
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = set()
    for top in TOP:
        for init in (ROOT / top).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT)
            found.add("loopcoder." + ".".join(rel.parts))
    assert found == listed, f"unlisted: {sorted(found - listed)}; listed but missing: {sorted(listed - found)}"


def test_model_server_imports_nothing_from_the_other_parts():
    offenders = []
    for path in (ROOT / "model_server").rglob("*.py"):
        text = path.read_text()
        for part in ("agent", "tools", "runtime", "scenarios"):
            if f"loopcoder.{part}" in text:
                offenders.append(f"{path.relative_to(ROOT)} -> loopcoder.{part}")
    assert not offenders, offenders
