"""The architecture holds: one direction of dependencies, small modules, documentation that points nowhere outside.

Layers (``docs/ARCHITECTURE.md``): graph operators <- models (plain ``nn.Module``s) <- tasks (LightningModules);
``audiognn.features`` and ``audiognn.data`` are the data-side contracts that both sides may use; datamodules
depend on those contracts only, never on models or tasks; tasks never import datamodules; callbacks use declared
interfaces only (no private attributes of other objects). Every check parses the source (``ast``), so a
violation anywhere — also inside a function — fails here.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("audiognn", "datamodules", "callbacks")
INTERNAL = PACKAGES + ("train",)


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _sources() -> dict[str, Path]:
    files = [p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")] + [ROOT / "train.py"]
    return {_module_name(p): p for p in files}


SOURCES = _sources()


def _imports(path: Path) -> list[tuple[str, int, bool]]:
    """(imported internal module, line, at module level) for every import statement of ``path``."""
    tree = ast.parse(path.read_text(), filename=str(path))
    top_level = {id(n) for n in tree.body}
    for node in tree.body:  # imports guarded by `if TYPE_CHECKING:` or try/except at module level count as top level
        if isinstance(node, (ast.If, ast.Try)):
            top_level |= {id(n) for n in ast.walk(node)}
    package = _module_name(path).rsplit(".", 1)[0] if path.name != "__init__.py" else _module_name(path)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative import
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                names = [".".join(base + ([node.module] if node.module else []))]
            else:
                names = [node.module or ""]
        else:
            continue
        for name in names:
            if name.split(".")[0] in INTERNAL:
                found.append((name, node.lineno, id(node) in top_level))
    return found


def _layer(module: str) -> str:
    """The layer a module belongs to (the longest matching prefix wins)."""
    rules = [
        ("audiognn.esc50_cv", "cli"),  # an alias of audiognn.cli.cross_validate kept for its old command line
        ("audiognn.graph", "graph"),
        ("audiognn.models", "models"),
        ("audiognn.tasks", "tasks"),
        ("audiognn.features", "data-contract"),
        ("audiognn.data", "data-contract"),
        ("audiognn.cli", "cli"),
        ("audiognn", "neutral"),
        ("datamodules", "datamodules"),
        ("callbacks", "callbacks"),
        ("train", "entry"),
    ]
    for prefix, layer in rules:
        if module == prefix or module.startswith(prefix + "."):
            return layer
    raise AssertionError(f"no layer for {module}")


# what each layer must never import
FORBIDDEN = {
    "graph": {"models", "tasks", "datamodules", "callbacks", "cli", "entry"},
    "data-contract": {"graph", "models", "tasks", "datamodules", "callbacks", "cli", "entry"},
    "models": {"tasks", "datamodules", "callbacks", "cli", "entry"},
    "tasks": {"datamodules", "callbacks", "cli", "entry"},
    "neutral": {"tasks", "datamodules", "callbacks", "cli", "entry"},
    "datamodules": {"models", "tasks", "callbacks", "cli", "entry"},
    "callbacks": {"datamodules", "entry"},
    "cli": {"entry"},
    "entry": set(),
}


@pytest.mark.parametrize("module", sorted(SOURCES))
def test_imports_follow_the_layers(module):
    src = _layer(module)
    bad = [
        f"{SOURCES[module].relative_to(ROOT)}:{line} ({src}) imports {name} ({_layer(name)})"
        for name, line, _ in _imports(SOURCES[module])
        if _layer(name) in FORBIDDEN[src]
    ]
    assert not bad, "imports against the direction of dependencies:\n" + "\n".join(bad)


@pytest.mark.parametrize("module", sorted(SOURCES))
def test_internal_imports_are_at_module_level(module):
    """An internal import hidden inside a function is how a cycle gets dodged: none is allowed."""
    hidden = [f"{SOURCES[module].relative_to(ROOT)}:{line} imports {name} inside a function"
              for name, line, top in _imports(SOURCES[module]) if not top]
    assert not hidden, "\n".join(hidden)


def test_no_lightning_below_the_tasks():
    """Models, graph operators and the data contracts are plain PyTorch: usable outside this application."""
    bad = []
    for module, path in SOURCES.items():
        if _layer(module) in ("graph", "models", "data-contract"):
            tree = ast.parse(path.read_text())
            for node in ast.walk(tree):
                names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                         else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
                bad += [f"{path.relative_to(ROOT)}:{node.lineno} imports {n}" for n in names
                        if n.split(".")[0] in ("lightning", "pytorch_lightning", "wandb")]
    assert not bad, "\n".join(bad)


def test_the_checker_sees_a_violation(tmp_path):
    """The import walk is able to fail: a datamodule importing a task is reported, also inside a function."""
    pkg = tmp_path / "datamodules"
    pkg.mkdir()
    f = pkg / "bad.py"
    f.write_text("def f():\n    from audiognn.tasks.audio_classifier import AudioClassifier\n")
    global ROOT
    old, ROOT = ROOT, tmp_path
    try:
        found = _imports(f)
    finally:
        ROOT = old
    assert found == [("audiognn.tasks.audio_classifier", 2, False)]
    assert _layer(found[0][0]) in FORBIDDEN["datamodules"]


def test_callbacks_use_no_private_attributes_of_other_objects():
    bad = []
    for path in (ROOT / "callbacks").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__")
                    and not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"))):
                bad.append(f"{path.relative_to(ROOT)}:{node.lineno} reads .{node.attr}")
    assert not bad, "callbacks must use declared interfaces:\n" + "\n".join(bad)


def test_no_module_over_400_lines():
    big = {str(p.relative_to(ROOT)): n for p in SOURCES.values() if p.parts[-2] != "tests"
           if (n := len(p.read_text().splitlines())) > 400 and p.name != "train.py"}
    assert not big, f"split these modules (one job each): {big}"


DOC_FILES = [p for pkg in PACKAGES + ("conf", "docs", "slurm") for p in (ROOT / pkg).rglob("*")
             if p.is_file() and p.suffix in (".py", ".yaml", ".yml", ".md", ".sbatch", ".sh")]
DOC_FILES += [ROOT / "train.py", ROOT / "README.md", ROOT / "pyproject.toml"]
# a paper by its number, an issue number, or a file outside the repository
OUTSIDE = re.compile(r"seed 00\d|\bissue \d|DESIGN\.md|\bnotes/[\w-]+\.md|\.\./shared|"
                     r"(?<![\w.~])/(?:work|home|root|Users|mnt|scratch)/", re.IGNORECASE)


def test_docs_and_code_point_nowhere_outside_the_repository():
    bad = []
    for path in DOC_FILES:
        for i, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            if m := OUTSIDE.search(line):
                bad.append(f"{path.relative_to(ROOT)}:{i}: {m.group(0)!r}")
    assert not bad, "name papers by title, cite nothing outside the repository:\n" + "\n".join(bad)
