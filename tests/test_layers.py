"""The package's layers only point down, and no two folders import each other.

Every `gemmaforge` import in the source (module level and inside functions alike: a deferred
import is still a dependency) is read with `ast`, and each module is placed in a layer by its
path. The table is DEVELOPERS.md's layout table; a new folder must be added to it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import gemmaforge

SRC = Path(gemmaforge.__file__).parent

# (module prefix, layer): the longest matching prefix wins. Higher layers may import lower
# ones and their own layer's modules, never higher ones.
LAYERS = [
    ("", 0),  # ground: config, config_load, errors, files, runs, signing, netguard
    ("hub.filters", 0),  # the search filters shared by hub server, client and CLI
    ("models", 1),
    # The hub's checks, shared by its server and client, read model structure (tower names,
    # weight files), so they sit beside models/.
    ("hub.gate", 1),
    ("hub.header", 1),
    ("hub.bases", 1),
    ("perf", 1),
    ("data.read", 2),
    ("data.examples", 3),
    ("data.batches", 4),
    ("train", 5),
    ("eval", 5),
    ("infer", 5),
    ("export", 5),
    ("record", 5),
    ("hub.client", 5),
    ("bench", 6),
    ("data.check", 6),
    ("hub.server", 6),
    ("quickstart", 6),
    ("cli", 7),
    ("hub.web", 7),
    ("dashboard", 7),
    ("__main__", 7),
]


def layer(module: str) -> int:
    best = max(
        (prefix for prefix, _ in LAYERS if module == prefix or module.startswith(prefix + ".")),
        key=len,
        default="",
    )
    return dict(LAYERS)[best]


def modules() -> dict[str, Path]:
    found = {}
    for path in SRC.rglob("*.py"):
        parts = path.relative_to(SRC).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def imports(path: Path) -> set[str]:
    """The gemmaforge modules `path` imports (`from gemmaforge.x import y` counts y when y is
    a module)."""
    known = modules()
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names if a.name.startswith("gemmaforge.")}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("gemmaforge"):
            base = node.module.removeprefix("gemmaforge").lstrip(".")
            for alias in node.names:
                child = f"{base}.{alias.name}".lstrip(".")
                names.add("gemmaforge." + (child if child in known else base))
    return {name.removeprefix("gemmaforge.").removeprefix("gemmaforge") for name in names}


def folder(module: str) -> str:
    """The folder a module lives in (top-level modules are their own)."""
    parts = module.split(".")
    return ".".join(parts[:-1]) if len(parts) > 1 and module not in _packages() else module


def _packages() -> set[str]:
    return {m for m, p in modules().items() if p.name == "__init__.py"}


def test_every_import_points_down():
    upward = []
    for module, path in sorted(modules().items()):
        for target in sorted(imports(path)):
            if target and layer(target) > layer(module):
                upward.append(
                    f"{module} (layer {layer(module)}) imports {target} ({layer(target)})"
                )
    assert not upward, "imports that point up:\n" + "\n".join(upward)


def test_no_two_folders_import_each_other():
    edges: dict[str, set[str]] = {}
    for module, path in modules().items():
        for target in imports(path):
            a, b = folder(module), folder(target)
            if target and a != b:
                edges.setdefault(a, set()).add(b)
    circles = sorted(
        f"{a} <-> {b}"
        for a, targets in edges.items()
        for b in targets
        if a < b and a in edges.get(b, ())
    )
    assert not circles, "folders that import each other: " + ", ".join(circles)


def test_the_table_knows_every_folder():
    unknown = sorted(
        m for m in modules() if "." in m and layer(m) == 0 and not m.startswith("hub.")
    )
    assert not unknown, f"modules in folders the layer table does not name: {unknown}"
