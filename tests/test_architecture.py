"""The architecture, checked from the source: subpackages import one way, MONAI is imported one way, and the
light entry points (the CLI's help, the napari reader) import no torch."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import medfcn

PACKAGE = Path(medfcn.__file__).parent
# Lower layers first: a module may import from its own subpackage, from a lower layer, or from the top-level modules
# (cli, errors, choices, _monai), never from a higher layer. batch and evaluation are side by side.
LAYERS = ["data", "dicom", "model", "inference", "batch|evaluation|annotation", "training"]
RANK = {name: i for i, layer in enumerate(LAYERS) for name in layer.split("|")}


def _modules() -> dict[str, ast.Module]:
    return {
        ".".join(p.relative_to(PACKAGE.parent).with_suffix("").parts): ast.parse(p.read_text())
        for p in sorted(PACKAGE.rglob("*.py"))
    }


def _imports(tree: ast.Module) -> list[tuple[str, int]]:
    """Every medfcn module named by an import anywhere in ``tree`` (module level and inside functions)."""
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append((node.module, node.lineno))
        elif isinstance(node, ast.Import):
            out += [(a.name, node.lineno) for a in node.names]
    return [(m, n) for m, n in out if m == "medfcn" or m.startswith("medfcn.")]


def _subpackage(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 2 else None  # medfcn.cli, medfcn.errors: top level


def test_every_subpackage_imports_only_itself_lower_layers_and_the_top():
    modules = _modules()
    assert set(RANK) == {_subpackage(m) for m in modules} - {None}, "a subpackage is missing from LAYERS"
    wrong = []
    for name, tree in modules.items():
        here = _subpackage(name)
        for target, line in _imports(tree):
            there = _subpackage(target)
            if here and there and here != there and RANK[there] >= RANK[here]:
                wrong.append(f"{name}:{line} imports {target}")
    assert not wrong, "imports running up or sideways between subpackages:\n" + "\n".join(wrong)


def test_the_layer_check_sees_a_wrong_import():
    """The check above could fail: an import from data up into inference is caught."""
    tree = ast.parse("def f():\n    from medfcn.inference.pipeline import Segmenter\n")
    ((target, line),) = _imports(tree)
    assert RANK[_subpackage(target)] > RANK[_subpackage("medfcn.data.reader")] and line == 2


def test_monai_is_imported_only_after_import_monai_in_the_same_scope():
    """One rule, one owner (:mod:`medfcn._monai`): every ``monai`` import follows an ``import_monai()`` call in the
    same function (or at module level, earlier in the module)."""
    wrong = []
    for name, tree in _modules().items():
        if name == "medfcn._monai":
            continue
        scopes = [tree, *(n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef))]
        for scope in scopes:
            body = scope.body
            called = False
            for stmt in body:
                nodes = [stmt] if isinstance(stmt, ast.FunctionDef | ast.ClassDef) else list(ast.walk(stmt))
                for node in nodes:
                    if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "import_monai":
                        called = True
                    mod = node.module if isinstance(node, ast.ImportFrom) else None
                    names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
                    if (mod and mod.split(".")[0] == "monai") or any(n.split(".")[0] == "monai" for n in names):
                        if not called:
                            wrong.append(f"{name}:{node.lineno}")
    assert not wrong, "MONAI imported without medfcn._monai.import_monai() first: " + ", ".join(wrong)


@pytest.mark.parametrize(
    "code",
    [
        "import sys\nfrom medfcn.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass\n",
        "import sys\nfrom napari_plugin._reader import get_reader\n",
    ],
    ids=["cli-help", "napari-reader"],
)
def test_light_entry_points_import_no_torch_or_monai(code):
    check = code + "assert 'torch' not in sys.modules and 'monai' not in sys.modules, sorted(sys.modules)\n"
    run = subprocess.run(
        [sys.executable, "-c", check], capture_output=True, encoding="utf-8", errors="replace", timeout=120
    )
    assert run.returncode == 0, run.stderr[-2000:]
