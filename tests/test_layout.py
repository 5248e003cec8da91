"""The package's layout rule (see ``unlearn/__init__.py``), checked on every import of every module.

Each module of ``unlearn/`` is parsed with ``ast``; every import, at module level or inside a
function, is resolved to the module it names and checked against the layers: a module may import
its own sub-package and the layers below it, never a private name (``_x``) of another module and
never a stage.
"""
import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "unlearn"
# Lowest first: a layer may import the layers before it in its chain, and itself.
CHAIN = ["core", "store", "methods", "evaluation", "pipeline", "tune", "study", "launcher"]
STAGES = "stages"  # may import core, store, methods and evaluation; imported by nothing in the package
STAGE_MAY_IMPORT = {"core", "store", "methods", "evaluation"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def layer(name: str) -> str | None:
    """``unlearn.core.engine`` -> ``core``; ``unlearn.launcher`` -> ``launcher``; ``unlearn`` -> None."""
    parts = name.split(".")
    return parts[1] if len(parts) > 1 else None


def imports(path: Path, known: dict[str, Path]):
    """(line, imported module, imported names) of every import of one module, resolved to absolute names.

    ``from .pkg import mod`` counts as an import of ``pkg.mod`` when that is a module."""
    me = module_name(path)
    is_pkg = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name == "unlearn" or a.name.startswith("unlearn."):
                    yield node.lineno, a.name, []
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = me.split(".") if is_pkg else me.split(".")[:-1]
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
                if not (target == "unlearn" or target.startswith("unlearn.")):
                    continue
            plain = []
            for a in node.names:
                if f"{target}.{a.name}" in known:
                    yield node.lineno, f"{target}.{a.name}", []
                else:
                    plain.append(a.name)
            if plain:
                yield node.lineno, target, plain


def allowed(src: str, dst: str) -> bool:
    a, b = layer(src), layer(dst)
    if b is None:  # unlearn/__init__.py: the thread policy, nothing to import
        return a is None
    if b == STAGES:
        return False
    if a == b:
        return True
    if a == STAGES:
        return b in STAGE_MAY_IMPORT
    if a is None or a not in CHAIN or b not in CHAIN:
        return False
    return CHAIN.index(b) < CHAIN.index(a)


KNOWN = modules()


def test_every_module_has_a_layer():
    unknown = [m for m in KNOWN if m != "unlearn" and layer(m) not in CHAIN + [STAGES]]
    assert not unknown, f"modules outside the layers of unlearn/__init__.py: {unknown}"


@pytest.mark.parametrize("name", sorted(KNOWN))
def test_imports_follow_the_layers(name):
    bad = [f"{KNOWN[name].relative_to(PACKAGE.parent)}:{line}: {dst} ({layer(name)} may not import {layer(dst)})"
           for line, dst, _ in imports(KNOWN[name], KNOWN) if not allowed(name, dst)]
    assert not bad, "\n".join(bad)


def module_aliases(path: Path) -> set[str]:
    """Names a module binds to another module of the package (``from . import summary as SM``: ``SM``)."""
    me, is_pkg, out = module_name(path), path.name == "__init__.py", set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = me.split(".") if is_pkg else me.split(".")[:-1]
            base = base[: len(base) - node.level + 1]
            target = ".".join(base + ([node.module] if node.module else []))
            out |= {a.asname or a.name for a in node.names if f"{target}.{a.name}" in KNOWN}
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            out |= {a.asname for a in node.names if a.asname and (a.name.startswith("unlearn.") or
                                                                   f"{getattr(node, 'module', '')}.{a.name}" in KNOWN)}
    return out


@pytest.mark.parametrize("name", sorted(KNOWN))
def test_no_private_name_crosses_modules(name):
    """``from .runner import _env`` or ``SM._strongest`` reaches into another module: make the name public."""
    path = KNOWN[name]
    bad = [f"{path.relative_to(PACKAGE.parent)}:{line}: {n} from {dst}"
           for line, dst, names in imports(path, KNOWN) for n in names if n.startswith("_") and not n.startswith("__")]
    aliases = module_aliases(path)
    bad += [f"{path.relative_to(PACKAGE.parent)}:{node.lineno}: {node.value.id}.{node.attr}"
            for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases
            and node.attr.startswith("_") and not node.attr.startswith("__")]
    assert not bad, "\n".join(bad)


def test_no_module_imports_a_stage():
    bad = [f"{name}:{line}: {dst}" for name, path in KNOWN.items() for line, dst, _ in imports(path, KNOWN)
           if layer(dst) == STAGES]
    assert not bad, "stages are leaves (the top-level scripts import them): " + "; ".join(bad)


def test_the_rule_is_stated_where_a_maintainer_looks():
    doc = ast.get_docstring(ast.parse((PACKAGE / "__init__.py").read_text())) or ""
    for name in CHAIN[:-1] + [STAGES]:
        assert f"{name}/" in doc, f"unlearn/__init__.py's docstring does not describe {name}/"


def test_evaluation_has_no_command_line():
    """Command lines live in stages/ (and tune/, study/, launcher.py); evaluation/ is a library."""
    bad = [name for name, path in KNOWN.items() if layer(name) == "evaluation"
           for node in ast.walk(ast.parse(path.read_text()))
           if isinstance(node, (ast.Import, ast.ImportFrom))
           and "argparse" in ([a.name for a in node.names] if isinstance(node, ast.Import) else [node.module])]
    assert not bad, f"argparse imported in {bad}"
