"""Repository environment images: a repository's Python dependencies in a virtual environment, pytest included.

Detection reads the repository's files and never runs them (a repository is untrusted): ``pyproject.toml``
(PEP 621 dependencies, the ``test``/``tests``/``testing``/``dev`` extras and dependency groups, setuptools'
``dynamic`` requirement files, Poetry tables, ``build-system``), ``setup.cfg``, ``setup.py`` (literal
``install_requires``/``extras_require`` read with ``ast``), ``requirements*.txt`` (root and
``requirements/``, with ``-r``/``-c`` includes), ``tox.ini`` (``[testenv]`` deps and extras), ``Pipfile``.
Only regular files inside the repository are read (no symlink out, no ``-r ../..``).

The image: the base image, the host CA bundle, a venv at ``/opt/venv`` (pip bootstrapped from the package
index, pinned and checked by sha256, since Debian's python3 lacks ensurepip) first on PATH (``python``, ``pip``, ``pytest``), owned by the sandbox user, holding the
build backend and the dependencies. The repository is NOT installed at build time: it is mounted at
/testbed at run time, and a ``.pth`` file in the venv puts ``/testbed`` (or ``/testbed/src`` for a src
layout) on ``sys.path``, so ``import pkg`` and ``python -m pytest`` work at once, offline, and nothing is
written into the workspace. When a run needs the package's metadata or console scripts, the documented
hook ``loopcoder-install-repo`` does ``pip install --no-deps --no-build-isolation --no-index -e /testbed``
offline (the build backend is already in the venv); it writes ``*.egg-info``/build files into the
workspace, so callers run it only when needed.

The tag is ``images.env_repository:<hash>`` of the generated Dockerfile (base image id, venv, packages) and
requirement files, so an unchanged dependency set on the same base is built once; other edits to the
repository do not count. Builds have network; sandboxes from the image have none.
"""
from __future__ import annotations

import ast
import configparser
import hashlib
import json
import posixpath
import re
import shlex
import time
import tomllib
from pathlib import Path
from typing import Literal

from pydantic import BaseModel

from loopcoder.runtime.config import ImagesConfig
from loopcoder.runtime.errors import ImageBuildError
from loopcoder.runtime.images import PATH, Progress, _docker_build, _image_id, _say, ca_lines

VENV = "/opt/venv"
ENV_DIR = "/opt/loopcoder/env"
# pip for the venv, fetched from the package index and checked against this digest (Debian's python3 has
# no ensurepip without the python3-venv package, and installing that by apt took 30-60 s here).
PIP_WHEEL = ("pip", "25.3", "9655943313a94722b7774661c21049070f6bbb0a1516bf02f7c8d5d9201514cd")
INSTALL_HOOK = "/usr/local/bin/loopcoder-install-repo"
BASE_PYTHON = "3.11"  # the base image's python3 (Debian bookworm)
TEST_GROUPS = ("test", "tests", "testing", "dev")
MAX_FILE_BYTES = 1 << 20
_REQ_FILE = re.compile(r"^(requirements([-_.](dev|devel|develop|test|tests|testing|ci))?"
                       r"|(dev|test|tests|testing)[-_]requirements)\.txt$", re.I)
_REQ_DIR_NAMES = {"base", "common", "main", "prod", "production", "requirements", "install", "test", "tests",
                  "testing", "dev", "develop", "ci"}
_PIP_OPTIONS = ("--index-url", "-i", "--extra-index-url", "--find-links", "-f", "--pre", "--prefer-binary",
                "--only-binary", "--no-binary", "--trusted-host")
_BACKENDS = {"setuptools.build_meta": "setuptools", "setuptools.build_meta:__legacy__": "setuptools",
             "hatchling.build": "hatchling", "poetry.core.masonry.api": "poetry", "poetry.masonry.api": "poetry",
             "flit_core.buildapi": "flit", "pdm.backend": "pdm", "pdm.pep517.api": "pdm", "maturin": "maturin",
             "mesonpy": "meson-python", "scikit_build_core.build": "scikit-build-core"}
_FACTOR = re.compile(r"^!?[\w{},.-]+:\s+")  # tox "py311: dep" conditional lines


class DetectedSource(BaseModel):
    kind: Literal["pyproject", "setup.cfg", "setup.py", "requirements", "tox", "pipfile"]
    path: str  # relative to the repository
    detail: str = ""  # e.g. "setuptools", "dependencies, extras [test]"


class RepoEnvSpec(BaseModel):
    """What a repository's environment needs, and where each part was found."""

    sources: list[DetectedSource] = []
    project_name: str | None = None
    build_backend: str | None = None
    extras: list[str] = []  # the project's own extras that were included
    requirements: list[str] = []  # lines of the generated requirements file (PEP 508 and pip options)
    constraints: list[str] = []
    build_requires: list[str] = []
    requires_python: str | None = None
    python: str = BASE_PYTHON
    import_path: str = "/testbed"  # put on sys.path by a .pth file in the venv
    notes: list[str] = []  # lines skipped and why, and other warnings

    def summary(self) -> str:
        """One line, e.g. ``detected: pyproject (setuptools), extras [test], requirements-dev.txt; python 3.11``."""
        parts = []
        for src in self.sources:
            if src.kind == "pyproject":
                parts.append(f"pyproject ({src.detail})" if src.detail else "pyproject")
                if self.extras:
                    parts.append(f"extras [{', '.join(self.extras)}]")
            elif src.kind == "requirements":
                parts.append(src.path)
            else:
                parts.append(f"{src.path} ({src.detail})" if src.detail else src.path)
        found = ", ".join(parts) if parts else "no dependency files"
        return f"detected: {found}; python {self.python}"


class RepoEnvImage(BaseModel):
    tag: str
    image_id: str
    content_hash: str
    reused: bool
    seconds: float
    spec: RepoEnvSpec


# -- detection -------------------------------------------------------------------------------------


def detect_repo_env(repo: str | Path) -> RepoEnvSpec:
    """Read the repository's dependency files (never run them); see the module docstring for what counts."""
    root = Path(repo).resolve()
    if not root.is_dir():
        raise ImageBuildError(f"repository folder {root} not found")
    d = _Detector(root)
    d.pyproject()
    d.setup_cfg()
    d.setup_py()
    d.requirement_files()
    d.tox()
    d.pipfile()
    return d.finish()


class _Detector:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.spec = RepoEnvSpec()
        self.self_extras: set[str] = set()  # extras asked for by "-e .[x]", ".[x]", "name[x]"
        self.extra_reqs: dict[str, list[str]] = {}  # the project's extras: name -> requirements
        self.seen_files: set[Path] = set()
        self.package_dir: str | None = None

    # files

    def read(self, rel: str | Path, base: Path | None = None, origin: str | None = None) -> str | None:
        """Text of a regular file inside the repository, else None (with a note when it exists outside)."""
        path = ((base or self.root) / rel)
        try:
            real = path.resolve()
        except OSError:
            return None
        if not real.is_relative_to(self.root):
            self.note(f"{origin + ': ' if origin and origin != str(rel) else ''}{rel}: outside the repository, "
                      "not read")
            return None
        if not real.is_file():
            return None
        if real.stat().st_size > MAX_FILE_BYTES:
            self.note(f"{rel}: larger than {MAX_FILE_BYTES} bytes, not read")
            return None
        return real.read_text(encoding="utf-8", errors="replace")

    def relname(self, path: Path) -> str:
        return str(path.resolve().relative_to(self.root))

    def note(self, text: str) -> None:
        if text not in self.spec.notes:
            self.spec.notes.append(text)

    def add(self, reqs: list[str], where: str) -> None:
        for r in reqs:
            r = r.strip()
            if not r:
                continue
            if self.is_self(r, where):
                continue
            if r not in self.spec.requirements:
                self.spec.requirements.append(r)

    def is_self(self, req: str, where: str) -> bool:
        """A requirement on the project itself: its extras are noted, the project is not installed."""
        name, extras = _name_and_extras(req)
        if name and self.spec.project_name and _canon(name) == _canon(self.spec.project_name):
            self.self_extras.update(extras)
            return True
        return False

    # formats

    def pyproject(self) -> None:
        text = self.read("pyproject.toml")
        if text is None:
            return
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            self.note(f"pyproject.toml: not valid TOML ({exc}); not read")
            return
        project = data.get("project") or {}
        poetry = (data.get("tool") or {}).get("poetry") or {}
        self.spec.project_name = project.get("name") or poetry.get("name")
        build = data.get("build-system") or {}
        backend = build.get("build-backend")
        self.spec.build_backend = _BACKENDS.get(backend, backend) if backend else "setuptools"
        self.spec.build_requires = [str(r) for r in build.get("requires", ["setuptools>=40.8.0", "wheel"])]
        details = []
        dynamic = set(project.get("dynamic") or [])
        setuptools_dyn = ((data.get("tool") or {}).get("setuptools") or {}).get("dynamic") or {}
        deps = [str(r) for r in project.get("dependencies") or []]
        if "dependencies" in dynamic and isinstance(setuptools_dyn.get("dependencies"), dict):
            for f in _as_list(setuptools_dyn["dependencies"].get("file")):
                deps += self.requirement_lines(f, origin="pyproject.toml (dynamic dependencies)")
        if deps:
            details.append("dependencies")
            self.add(deps, "pyproject.toml")
        optional = {_canon(k): [str(r) for r in v] for k, v in (project.get("optional-dependencies") or {}).items()}
        dyn_optional = setuptools_dyn.get("optional-dependencies") or {}
        for name, value in dyn_optional.items():
            if isinstance(value, dict):
                optional[_canon(name)] = [line for f in _as_list(value.get("file"))
                                          for line in self.requirement_lines(f, origin="pyproject.toml")]
        self.extra_reqs.update(optional)
        self.self_extras.update(g for g in TEST_GROUPS if g in optional)
        groups = data.get("dependency-groups") or {}
        for g in TEST_GROUPS:
            if g in groups:
                self.add(_group(groups, g, set()), "pyproject.toml")
                details.append(f"group {g}")
        if poetry:
            self.poetry(poetry)
            details.append("poetry tables")
        if project.get("requires-python"):
            self.spec.requires_python = str(project["requires-python"])
        pkg_dir = (((data.get("tool") or {}).get("setuptools") or {}).get("package-dir") or {}).get("")
        if pkg_dir:
            self.package_dir = str(pkg_dir)
        self.spec.sources.append(DetectedSource(kind="pyproject", path="pyproject.toml",
                                                detail=self.spec.build_backend or ""))

    def poetry(self, poetry: dict) -> None:
        def convert(tables: list[dict]) -> list[str]:
            out = []
            for table in tables:
                for name, spec in table.items():
                    if name.lower() == "python":
                        self.spec.requires_python = self.spec.requires_python or _poetry_version(str(spec))
                        continue
                    req = _poetry_requirement(name, spec)
                    if req is None:
                        self.note(f"pyproject.toml: poetry dependency {name} (path, git or url source) not installed")
                    elif req:
                        out.append(req)
            return out

        self.add(convert([poetry.get("dependencies") or {}]), "pyproject.toml")
        tables = [poetry.get("dev-dependencies") or {}]
        for g in TEST_GROUPS:
            tables.append((((poetry.get("group") or {}).get(g) or {}).get("dependencies")) or {})
        self.add(convert(tables), "pyproject.toml")

    def read_ini(self, name: str) -> "configparser.ConfigParser | None":
        """The parsed INI file ``name`` of the repository; None (with a note when unreadable) otherwise."""
        text = self.read(name)
        if text is None:
            return None
        cfg = configparser.ConfigParser(interpolation=None, strict=False)
        try:
            cfg.read_string(text)
        except configparser.Error as exc:
            self.note(f"{name}: unreadable ({exc.__class__.__name__}); not read")
            return None
        return cfg

    def setup_cfg(self) -> None:
        cfg = self.read_ini("setup.cfg")
        if cfg is None:
            return
        found = []
        self.spec.project_name = self.spec.project_name or cfg.get("metadata", "name", fallback=None)
        if cfg.has_option("options", "install_requires"):
            self.add(self.cfg_list(cfg.get("options", "install_requires")), "setup.cfg")
            found.append("install_requires")
        if cfg.has_section("options.extras_require"):
            for name, value in cfg.items("options.extras_require"):
                self.extra_reqs.setdefault(_canon(name), self.cfg_list(value))
            if any(g in self.extra_reqs for g in TEST_GROUPS):
                self.self_extras.update(g for g in TEST_GROUPS if g in self.extra_reqs)
        if cfg.has_option("options", "tests_require"):
            self.add(self.cfg_list(cfg.get("options", "tests_require")), "setup.cfg")
            found.append("tests_require")
        if cfg.has_option("options", "python_requires"):
            self.spec.requires_python = self.spec.requires_python or cfg.get("options", "python_requires").strip()
        if cfg.has_option("options", "package_dir"):
            m = re.search(r"(?:^|\n)\s*=\s*(\S+)", "\n" + cfg.get("options", "package_dir"))
            if m:
                self.package_dir = m.group(1)
        if cfg.has_option("options", "setup_requires"):
            for r in self.cfg_list(cfg.get("options", "setup_requires")):
                if r not in self.spec.build_requires:
                    self.spec.build_requires.append(r)
        if found or cfg.has_section("options.extras_require"):
            self.spec.sources.append(DetectedSource(kind="setup.cfg", path="setup.cfg", detail=", ".join(found)))

    def cfg_list(self, value: str) -> list[str]:
        value = value.strip()
        if value.startswith("file:"):
            return [line for f in value[5:].split(",") for line in self.requirement_lines(f.strip(), origin="setup.cfg")]
        return [line.strip() for line in value.splitlines() if line.strip() and not line.strip().startswith("#")]

    def setup_py(self) -> None:
        text = self.read("setup.py")
        if text is None:
            return
        try:
            tree = ast.parse(text)
        except SyntaxError:
            self.note("setup.py: not valid Python; not read")
            return
        assigns = {t.id: node.value for node in tree.body if isinstance(node, ast.Assign)
                   for t in node.targets if isinstance(t, ast.Name)}
        call = next((n for n in ast.walk(tree) if isinstance(n, ast.Call)
                     and getattr(n.func, "id", getattr(n.func, "attr", None)) == "setup"), None)
        if call is None:
            self.note("setup.py: no setup() call found")
            return
        read = []
        for kw in call.keywords:
            if kw.arg is None:
                self.note("setup.py: setup(**kwargs) is not read statically")
                continue
            if kw.arg not in ("install_requires", "extras_require", "tests_require", "python_requires", "name"):
                continue
            node = assigns.get(kw.value.id, kw.value) if isinstance(kw.value, ast.Name) else kw.value
            try:
                value = ast.literal_eval(node)
            except (ValueError, SyntaxError, TypeError):
                self.note(f"setup.py: {kw.arg} is computed when setup.py runs; not read (install by hand if needed)")
                continue
            if kw.arg == "name" and isinstance(value, str):
                self.spec.project_name = self.spec.project_name or value
            elif kw.arg == "python_requires" and isinstance(value, str):
                self.spec.requires_python = self.spec.requires_python or value
            elif kw.arg == "extras_require" and isinstance(value, dict):
                for name, reqs in value.items():
                    self.extra_reqs.setdefault(_canon(str(name)), _as_list(reqs))
                self.self_extras.update(g for g in TEST_GROUPS if g in self.extra_reqs)
                read.append("extras_require")
            elif kw.arg in ("install_requires", "tests_require"):
                self.add([str(r) for r in _as_list(value)], "setup.py")
                read.append(kw.arg)
        if read:
            self.spec.sources.append(DetectedSource(kind="setup.py", path="setup.py",
                                                    detail="static: " + ", ".join(read)))
        if not self.spec.build_backend:
            self.spec.build_backend = "setuptools"
            self.spec.build_requires = ["setuptools>=40.8.0", "wheel"]

    def requirement_files(self) -> None:
        # requirements.txt first: the others often include it with -r.
        candidates = sorted((p for p in self.root.iterdir() if _REQ_FILE.match(p.name)),
                            key=lambda p: (p.name != "requirements.txt", p.name))
        folder = self.root / "requirements"
        if folder.is_dir() and not folder.is_symlink():
            candidates += sorted(p for p in folder.iterdir() if p.suffix == ".txt" and p.stem.lower() in _REQ_DIR_NAMES)
        for path in candidates:
            if path.resolve() in self.seen_files:
                continue
            rel = path.relative_to(self.root)
            lines = self.requirement_lines(str(rel), origin=str(rel))
            if path.resolve() in self.seen_files:  # it was read (a regular file inside the repository)
                self.add(lines, str(rel))
                self.spec.sources.append(DetectedSource(kind="requirements", path=str(rel)))

    def requirement_lines(self, rel: str, origin: str, base: Path | None = None, depth: int = 0,
                          constraints: bool = False) -> list[str]:
        """Requirement lines of a pip requirements file, includes followed (inside the repository only)."""
        path = ((base or self.root) / rel)
        text = self.read(rel, base, origin)
        if text is None:
            if not path.exists():
                self.note(f"{origin}: {rel} not found")
            return []
        real = path.resolve()
        if real in self.seen_files or depth > 10:
            return []
        self.seen_files.add(real)
        out: list[str] = []
        for line in _logical_lines(text):
            if line.startswith(("-r", "--requirement", "-c", "--constraint")):
                is_constraint = line.startswith(("-c", "--constraint"))
                target = re.sub(r"^(-r|--requirement|-c|--constraint)[=\s]*", "", line).strip()
                sub = self.requirement_lines(target, origin, real.parent, depth + 1, constraints or is_constraint)
                if is_constraint and not constraints:
                    self.spec.constraints += [c for c in sub if c not in self.spec.constraints]
                else:
                    out += sub
            elif line.startswith(("-e", "--editable")):
                target = re.sub(r"^(-e|--editable)[=\s]*", "", line).strip()
                if _is_local(target):
                    self.local_ref(target, real.parent, f"{self.relname(real)}: {line}")
                else:
                    out.append(line)
            elif line.startswith("-"):
                if line.split("=")[0].split()[0] in _PIP_OPTIONS:
                    out.append(line)
                else:
                    self.note(f"{self.relname(real)}: option {line!r} not used")
            elif _is_local(line.split(";")[0].strip()):
                self.local_ref(line.split(";")[0].strip(), real.parent, f"{self.relname(real)}: {line}")
            else:
                if " --hash" in line:  # one hashed line would put pip in --require-hashes mode for all of them
                    line = re.sub(r"\s+--hash[=\s]\S+", "", line)
                    self.note(f"{self.relname(real)}: --hash options dropped (requirements from several files are "
                              "installed together)")
                out.append(line)
        return out

    def local_ref(self, target: str, base: Path, where: str) -> None:
        """``.``/``.[test]``/``./pkg``: the repository itself gives extras; other local paths are noted."""
        path_part, extras = (target.split("[", 1) + [""])[:2]
        path_part = path_part.removeprefix("file:").rstrip("/") or "."
        if (base / path_part).resolve() == self.root:
            self.self_extras.update(_canon(e) for e in extras.rstrip("]").split(",") if e.strip())
        else:
            self.note(f"{where}: local path not installed at build time")

    def tox(self) -> None:
        cfg = self.read_ini("tox.ini")
        if cfg is None:
            return
        if not cfg.has_section("testenv"):
            return
        got = []
        reqs: list[str] = []
        for line in cfg.get("testenv", "deps", fallback="").splitlines():
            line = line.split(" #")[0].strip().replace("{toxinidir}", ".").replace("{toxinidir}/", "./")
            if not line or line.startswith("#"):
                continue
            if _FACTOR.match(line):
                self.note(f"tox.ini: conditional dep {line!r} not used")
                continue
            m = re.fullmatch(r"\{\[([^\]]+)\](\w+)\}", line)
            if m:  # {[section]key}: a list kept elsewhere in tox.ini
                lines = cfg.get(m.group(1), m.group(2), fallback="").splitlines()
            else:
                lines = [line]
            for ln in lines:
                ln = ln.strip()
                if not ln or "{" in ln:
                    if ln:
                        self.note(f"tox.ini: dep {ln!r} uses a tox substitution; not used")
                    continue
                if ln.startswith(("-r", "-c", "--requirement", "--constraint")):
                    target = re.sub(r"^(-r|--requirement|-c|--constraint)[=\s]*", "", ln)
                    if ln.startswith(("-c", "--constraint")):
                        self.spec.constraints += self.requirement_lines(target, "tox.ini", constraints=True)
                    else:
                        reqs += self.requirement_lines(target, "tox.ini")
                elif _is_local(ln.removeprefix("-e").strip()):
                    self.local_ref(ln.removeprefix("-e").strip(), self.root, f"tox.ini: {ln}")
                else:
                    reqs.append(ln)
        if reqs:
            got.append("testenv deps")
            self.add(reqs, "tox.ini")
        extras = [_canon(e) for e in re.split(r"[\s,]+", cfg.get("testenv", "extras", fallback="")) if e]
        if extras:
            self.self_extras.update(extras)
            got.append(f"extras {', '.join(extras)}")
        if got:
            self.spec.sources.append(DetectedSource(kind="tox", path="tox.ini", detail="; ".join(got)))

    def pipfile(self) -> None:
        text = self.read("Pipfile")
        if text is None:
            return
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError:
            self.note("Pipfile: not valid TOML; not read")
            return
        reqs = []
        for table in ("packages", "dev-packages"):
            for name, spec in (data.get(table) or {}).items():
                req = _pipfile_requirement(name, spec)
                if req is None:
                    self.note(f"Pipfile: {name} (path, git or file source) not installed")
                else:
                    reqs.append(req)
        python = (data.get("requires") or {}).get("python_version")
        if python and not self.spec.requires_python:
            self.spec.requires_python = f"=={python}.*"
        if reqs:
            self.add(reqs, "Pipfile")
            self.spec.sources.append(DetectedSource(kind="pipfile", path="Pipfile", detail="packages, dev-packages"))

    # result

    def finish(self) -> RepoEnvSpec:
        spec = self.spec
        # The project's extras asked for (test extras, "-e .[x]", tox extras), expanding self-references.
        done: set[str] = set()
        todo = [e for e in sorted(self.self_extras) if e in self.extra_reqs]
        for missing in sorted(self.self_extras - set(self.extra_reqs)):
            if self.extra_reqs:
                self.note(f"extra [{missing}] is not defined by the project")
        while todo:
            extra = todo.pop(0)
            if extra in done:
                continue
            done.add(extra)
            before = set(self.self_extras)
            self.add(self.extra_reqs[extra], f"extra {extra}")
            todo += [e for e in sorted(self.self_extras - before) if e in self.extra_reqs and e not in done]
        spec.extras = sorted(done, key=lambda e: (TEST_GROUPS.index(e) if e in TEST_GROUPS else len(TEST_GROUPS), e))
        if not any(_canon(_name_and_extras(r)[0] or "") == "pytest" for r in spec.requirements):
            spec.requirements.append("pytest")
            spec.notes.append("pytest added (the repository does not name it)")
        if spec.requires_python and not _python_allowed(spec.requires_python, spec.python):
            spec.notes.append(f"requires-python {spec.requires_python!r} excludes Python {spec.python} of the base "
                              "image; the environment is built with it anyway")
        layout = self.package_dir
        if layout is None:
            src = self.root / "src"
            if src.is_dir() and any((p / "__init__.py").is_file() or p.suffix == ".py" for p in src.iterdir()):
                layout = "src"
        if layout and layout not in (".", ""):
            spec.import_path = posixpath.join("/testbed", layout.strip("/"))
        if not spec.build_requires:
            spec.build_requires = ["setuptools>=40.8.0", "wheel"]
        if spec.build_backend == "setuptools" and not any(_canon(_name_and_extras(r)[0] or "") == "wheel"
                                                          for r in spec.build_requires):
            # setuptools before 70 needs the wheel package for editable installs (loopcoder-install-repo).
            spec.build_requires.append("wheel")
        return spec


def _logical_lines(text: str) -> list[str]:
    out, buf = [], ""
    for raw in text.splitlines():
        line = re.sub(r"(^|\s)#.*$", "", raw).rstrip()
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        line = (buf + line).strip()
        buf = ""
        if line:
            out.append(line)
    if buf.strip():
        out.append(buf.strip())
    return out


def _is_local(target: str) -> bool:
    t = target.strip()
    return (t in (".", "..") or t.startswith((".", "/", "file:")) or t.startswith(".[")
            or (bool(t) and "://" not in t and "/" in t.split("[")[0] and " @ " not in t and not t.startswith("git+")))


def _name_and_extras(req: str) -> tuple[str | None, list[str]]:
    m = re.match(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(\[([^\]]*)\])?", req)
    if not m or req.lstrip().startswith("-"):
        return None, []
    extras = [_canon(e) for e in (m.group(3) or "").split(",") if e.strip()]
    return m.group(1), extras


def _canon(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower().strip()


def _as_list(value) -> list:
    if value is None:
        return []
    if isinstance(value, str):
        return [v for v in value.splitlines() if v.strip()] or [value]
    return list(value)


def _group(groups: dict, name: str, seen: set[str]) -> list[str]:
    """PEP 735 group ``name`` with ``{include-group = ...}`` entries expanded."""
    if name in seen:
        return []
    seen.add(name)
    out = []
    for item in groups.get(name) or []:
        if isinstance(item, dict) and "include-group" in item:
            out += _group(groups, item["include-group"], seen)
        elif isinstance(item, str):
            out.append(item)
    return out


def _poetry_version(spec: str) -> str:
    """Poetry's ^ and ~ constraints as PEP 440 ranges; other forms pass through."""
    spec = spec.strip()
    if spec in ("*", ""):
        return ""
    out = []
    for part in spec.split(","):
        part = part.strip()
        if part.startswith("^") or (part.startswith("~") and not part.startswith("~=")):
            caret = part[0] == "^"
            nums = [int(x) if x.isdigit() else 0 for x in part[1:].split(".")]
            if caret:
                first = next((i for i, n in enumerate(nums) if n), len(nums) - 1)
                upper = nums[: first + 1]
            else:
                upper = nums[:2] if len(nums) > 1 else nums[:1]
            upper = upper[:-1] + [upper[-1] + 1]
            out.append(f">={part[1:]},<{'.'.join(map(str, upper))}")
        elif part[0].isdigit():
            out.append(f"=={part}")
        else:
            out.append(part)
    return ",".join(out)


def _poetry_requirement(name: str, spec) -> str | None:
    if isinstance(spec, list):  # multiple constraints by marker: take the first
        spec = spec[0] if spec else "*"
    if isinstance(spec, str):
        return name + _poetry_version(spec)
    if not isinstance(spec, dict):
        return name
    if any(k in spec for k in ("path", "git", "url", "file")):
        return None
    if spec.get("optional"):
        return ""
    extras = f"[{','.join(spec['extras'])}]" if spec.get("extras") else ""
    marker = f"; {spec['markers']}" if spec.get("markers") else ""
    return f"{name}{extras}{_poetry_version(str(spec.get('version', '*')))}{marker}"


def _pipfile_requirement(name: str, spec) -> str | None:
    if isinstance(spec, str):
        return name if spec in ("*", "") else name + (spec if spec[0] in "<>=!~" else f"=={spec}")
    if not isinstance(spec, dict):
        return name
    if any(k in spec for k in ("path", "git", "file", "editable")):
        return None
    extras = f"[{','.join(spec['extras'])}]" if spec.get("extras") else ""
    version = str(spec.get("version", "*"))
    version = "" if version == "*" else version
    marker = f"; {spec['markers']}" if spec.get("markers") else ""
    return f"{name}{extras}{version}{marker}"


def _python_allowed(requires: str, python: str) -> bool:
    from packaging.specifiers import InvalidSpecifier, SpecifierSet

    try:
        return SpecifierSet(requires).contains(python + ".0", prereleases=True) or SpecifierSet(requires).contains(
            python + ".99", prereleases=True)
    except InvalidSpecifier:
        return True


# -- the image -------------------------------------------------------------------------------------


# Runs in the image with the base image's python3 and the standard library only.
BOOTSTRAP_PIP = r'''"""Install a pinned pip wheel into the running venv from the package index (PEP 691 JSON or PEP 503 HTML)."""
import hashlib, json, os, re, subprocess, sys, tempfile, urllib.parse, urllib.request

name, version, digest = sys.argv[1:4]
wheel = f"{name}-{version}-py3-none-any.whl"
index = os.environ.get("PIP_INDEX_URL", "https://pypi.org/simple").rstrip("/") + f"/{name}/"
try:
    req = urllib.request.Request(index, headers={"Accept": "application/vnd.pypi.simple.v1+json, text/html;q=0.1"})
    with urllib.request.urlopen(req, timeout=60) as r:
        body, kind = r.read(), r.headers.get("Content-Type", "")
    if "json" in kind:
        urls = [f["url"] for f in json.loads(body)["files"] if f["filename"] == wheel]
    else:
        urls = [u for u in re.findall(r'href="([^"]+)"', body.decode()) if u.split("#")[0].endswith("/" + wheel)]
    if not urls:
        sys.exit(f"ERROR: {wheel} is not on the package index {index}")
    with urllib.request.urlopen(urllib.parse.urljoin(index, urls[0]), timeout=120) as r:
        blob = r.read()
except OSError as exc:
    sys.exit(f"ERROR: cannot reach the package index {index}: {exc}")
if hashlib.sha256(blob).hexdigest() != digest:
    sys.exit(f"ERROR: {wheel} from {index} does not have the expected sha256 {digest}")
path = os.path.join(tempfile.mkdtemp(), wheel)
with open(path, "wb") as f:
    f.write(blob)
# A wheel is importable as it is: pip installs itself from its own wheel.
subprocess.check_call([sys.executable, os.path.join(path, "pip"), "install", "--no-cache-dir", "--no-index",
                       "--disable-pip-version-check", "--quiet", path])
'''


def repo_env_files(spec: RepoEnvSpec) -> dict[str, bytes]:
    """The files the image's Dockerfile copies in (besides the CA bundle)."""
    hook = (
        "#!/bin/sh\n"
        "# Install the repository mounted at /testbed (or $1) into the venv as an editable package, offline:\n"
        "# its dependencies and build backend were installed when the image was built.\n"
        f'exec {VENV}/bin/python -m pip install --no-deps --no-build-isolation --no-index -e "${{1:-/testbed}}"\n'
    )
    return {
        "build-requirements.txt": "".join(r + "\n" for r in spec.build_requires).encode(),
        "requirements.txt": "".join(r + "\n" for r in spec.requirements).encode(),
        "constraints.txt": "".join(r + "\n" for r in spec.constraints).encode(),
        "loopcoder-install-repo": hook.encode(),
        "bootstrap-pip.py": BOOTSTRAP_PIP.encode(),
    }


def repo_env_dockerfile(spec: RepoEnvSpec, base_id: str, with_ca: bool, uid: int,
                        apt_packages: tuple[str, ...] = ()) -> str:
    """Dockerfile of a repository environment image; the steps that do not depend on the repository come
    first, so the engine's layer cache shares them between repositories."""
    lines = [f"FROM {base_id}", "USER root", *(ca_lines() if with_ca else [])]
    if apt_packages:
        lines.append("RUN apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "
                     + " ".join(shlex.quote(p) for p in apt_packages) + " && rm -rf /var/lib/apt/lists/*")
    lines += [
        f"COPY bootstrap-pip.py loopcoder-install-repo {ENV_DIR}/",
        f"RUN install -m 755 {ENV_DIR}/loopcoder-install-repo {INSTALL_HOOK} && mkdir -p {VENV} "
        f"&& chown {uid}:{uid} {VENV}",
        f"USER {uid}:{uid}",
        f"RUN python3 -m venv --without-pip {VENV} && {VENV}/bin/python {ENV_DIR}/bootstrap-pip.py "
        + " ".join(PIP_WHEEL),
        f"ENV VIRTUAL_ENV={VENV} PATH={VENV}/bin:{PATH} PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1",
        f"COPY build-requirements.txt {ENV_DIR}/",
        f"RUN pip install --no-cache-dir -r {ENV_DIR}/build-requirements.txt",
        f"COPY requirements.txt constraints.txt {ENV_DIR}/",
        f"RUN pip install --no-cache-dir -r {ENV_DIR}/requirements.txt -c {ENV_DIR}/constraints.txt",
        # The mounted repository on sys.path: importable without installing it (nothing written to /testbed).
        f"RUN echo {shlex.quote(spec.import_path)} > \"$(python -c 'import sysconfig; "
        "print(sysconfig.get_path(\"purelib\"))')/loopcoder-testbed.pth\"",
        "USER root",
        "WORKDIR /testbed",
    ]
    return "\n".join(lines) + "\n"


def build_repo_env_image(
    client,
    repo: str | Path | RepoEnvSpec,
    cfg: ImagesConfig,
    progress: Progress | None = None,
    apt_packages: tuple[str, ...] = (),
) -> RepoEnvImage:
    """The environment image of a repository (a folder, or a spec from ``detect_repo_env``): reused when its
    content-hash tag exists, built otherwise (with network). ImageBuildError with pip's error line when the
    build fails; callers can then fall back to the base image (``repo_env_image_or_base``)."""
    started = time.monotonic()
    spec = repo if isinstance(repo, RepoEnvSpec) else detect_repo_env(repo)
    base_id = _image_id(client, cfg.base_image)
    if base_id is None:
        raise ImageBuildError(f"base image {cfg.base_image!r} not found; run `loopcoder sandbox build-base`")
    files = repo_env_files(spec)
    with_ca = cfg.ca_bundle.is_file()
    if with_ca:
        files["ca-certificates.crt"] = cfg.ca_bundle.read_bytes()
    dockerfile = repo_env_dockerfile(spec, base_id, with_ca, cfg.sandbox_uid, tuple(apt_packages))
    h = hashlib.sha256(b"loopcoder-repo-env-v1\0" + dockerfile.encode() + b"\0")
    for name in sorted(files):
        h.update(name.encode() + b"\0" + hashlib.sha256(files[name]).hexdigest().encode() + b"\0")
    digest = h.hexdigest()
    tag = f"{cfg.env_repository}:{digest[:20]}"
    existing = _image_id(client, tag)
    if existing is not None:
        return RepoEnvImage(tag=tag, image_id=existing, content_hash=digest, reused=True,
                            seconds=time.monotonic() - started, spec=spec)
    files["Dockerfile"] = dockerfile.encode()
    _say(progress, f"building {tag}: {spec.summary()}")
    _docker_build(client, files, tag, progress, pull=False, network_mode=cfg.build_network,
                  labels={"loopcoder.env": digest, "loopcoder.repo-env": spec.summary(),
                          "loopcoder.repo-env.spec": json.dumps(spec.model_dump())[:60_000]})
    return RepoEnvImage(tag=tag, image_id=client.api.inspect_image(tag)["Id"], content_hash=digest, reused=False,
                        seconds=time.monotonic() - started, spec=spec)


def repo_env_image_or_base(client, repo: str | Path, cfg: ImagesConfig,
                           progress: Progress | None = None) -> tuple[str, RepoEnvImage | None, str | None]:
    """(image to run, the environment image or None, why it could not be built or None).

    The base image is returned when the environment image cannot be built (no network, a dependency
    that does not install); the agent can still install what it needs in the sandbox when allowed.
    """
    try:
        env = build_repo_env_image(client, repo, cfg, progress)
    except ImageBuildError as exc:
        return cfg.base_image, None, str(exc)
    return env.tag, env, None
