"""The layers of ``src/embedgate`` (docs/adr/0001-package-layout.md): each package imports
only packages of lower layers (or its own), and no modules import each other in a circle.

Every import counts, at module level or inside a function: a deferred import is still a
dependency. ``KNOWN_CIRCLES`` lists circles the layout tolerates (none now); a new one fails,
and so does a listed one that is gone (remove it from the list).
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "embedgate"

# Bottom up; a package may import its own layer's packages only where listed together.
LAYERS: list[set[str]] = [
    {"", "errors", "config", "keyfiles", "allocator", "datalock"},
    {"observability", "storage", "docstore"},
    {"engine"},
    {"tenancy"},
    {"limits"},
    {"embeddings"},
    {"rerank"},
    {"search"},
    {"backup"},
    {"runtime"},
    {"api"},
    {"app"},
    {"cli", "__main__"},
]
KNOWN_CIRCLES: set[frozenset[str]] = set()


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports() -> dict[str, set[str]]:
    """Each module of embedgate -> the embedgate modules it imports."""
    modules = {module_name(p): p for p in SRC.rglob("*.py")}
    found: dict[str, set[str]] = defaultdict(set)
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                continue
            found[name] |= {t for t in targets if t in modules and t != name}
    return found


def package(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def layer(module: str) -> int:
    return next(i for i, names in enumerate(LAYERS) if package(module) in names)


def test_every_package_has_a_layer() -> None:
    missing = {package(m) for m in imports()} - set().union(*LAYERS)
    assert not missing, f"packages without a layer in LAYERS: {missing}"


def test_no_package_imports_a_higher_layer() -> None:
    upward = sorted(
        f"{source} -> {target}"
        for source, targets in imports().items()
        for target in targets
        if layer(target) > layer(source)
    )
    assert not upward, "imports from a lower layer to a higher one:\n" + "\n".join(upward)


def test_no_modules_import_each_other_in_a_circle() -> None:
    graph = imports()
    circles = set()
    for start in graph:
        stack, seen = [(start, (start,))], {start}
        while stack:
            node, path = stack.pop()
            for target in graph.get(node, ()):
                if target == start:
                    circles.add(frozenset(path))
                elif target not in seen:
                    seen.add(target)
                    stack.append((target, (*path, target)))
    assert circles == KNOWN_CIRCLES, (
        f"new circles: {[sorted(c) for c in circles - KNOWN_CIRCLES]}; "
        f"gone (remove from KNOWN_CIRCLES): {[sorted(c) for c in KNOWN_CIRCLES - circles]}"
    )


def test_the_walk_sees_a_circle_and_an_upward_import() -> None:
    graph = imports()  # the checks above would pass on an empty walk: make sure they see
    assert "embedgate.engine.scheduler" in graph["embedgate.engine.registry"]
    assert layer("embedgate.api.admin") > layer("embedgate.tenancy.keys")
