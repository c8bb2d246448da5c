"""The import-layer contract: attnviz's subpackages import downwards only, the library never imports
streamlit or the app, and the app's helpers and pages never touch hooks."""

from __future__ import annotations

import ast
import os
import pkgutil
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import attnviz

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def _lint(config: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(cwd)}
    return subprocess.run(
        [str(LINT_IMPORTS), "--config", str(config), "--no-cache"],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def _contracts() -> list[dict]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]


def test_the_import_contracts_hold() -> None:
    run = _lint(ROOT / "pyproject.toml", ROOT)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "Contracts: 3 kept, 0 broken." in run.stdout


def test_the_layers_name_every_subpackage_of_attnviz() -> None:
    """A new subpackage cannot escape the contract: every one has its place in the layers."""
    [layers] = [c for c in _contracts() if c["type"] == "layers"]
    subpackages = {f"attnviz.{m.name}" for m in pkgutil.iter_modules(attnviz.__path__) if m.ispkg}
    assert subpackages | {"attnviz.cli"} == set(layers["layers"])


def test_each_subpackage_says_what_it_owns_and_may_import() -> None:
    for info in pkgutil.iter_modules(attnviz.__path__):
        if info.ispkg:
            doc = ast.get_docstring(ast.parse((ROOT / "attnviz" / info.name / "__init__.py").read_text()))
            assert doc and "import" in doc and len(doc.split()) >= 25, f"attnviz.{info.name}: {doc!r}"


def test_a_broken_layer_is_reported(tmp_path: Path) -> None:
    """The same kind of contract on a throwaway package whose lower layer imports the upper one."""
    pkg = tmp_path / "probe"
    for name, body in {
        "__init__.py": "",
        "high/__init__.py": "from probe.low import base\n",
        "low/__init__.py": "",
        "low/base.py": "import probe.high\n",
    }.items():
        (pkg / name).parent.mkdir(parents=True, exist_ok=True)
        (pkg / name).write_text(body)
    config = tmp_path / "contract.toml"
    config.write_text(
        textwrap.dedent(
            """
            [tool.importlinter]
            root_packages = ["probe"]

            [[tool.importlinter.contracts]]
            name = "probe is layered"
            type = "layers"
            layers = ["probe.high", "probe.low"]
            """
        )
    )
    run = _lint(config, tmp_path)
    assert run.returncode == 1
    assert "probe.low is not allowed to import probe.high" in run.stdout


def _imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names |= {f"{node.module}.{a.name}" for a in node.names}
    return names


def test_pages_touch_no_hooks() -> None:
    """Pages call attnviz's functions; hooks, taps and the capture context are the library's."""
    for page in [ROOT / "app.py", *sorted((ROOT / "pages").glob("*.py"))]:
        modules = _imported_modules(page)
        assert not {m for m in modules if m.startswith("attnviz.capture")}, page.name
        text = page.read_text()
        assert "register_forward_hook" not in text and "register_forward_pre_hook" not in text, page.name


def test_old_module_names_are_short_aliases_of_the_new_ones() -> None:
    from attnviz.maps import attention_maps
    from attnviz.modules import create_attention
    from attnviz.scales import map_scale

    from attnviz import layers, sampling, vit
    from attnviz.core import scales
    from attnviz.views import deformable, maps, transformer

    assert vit is transformer and sampling is deformable
    assert attention_maps is maps.attention_maps and map_scale is scales.map_scale
    assert create_attention is layers.create_attention
