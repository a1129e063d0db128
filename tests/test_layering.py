"""The layer rule of docs/architecture.md: a module imports r1lab code only from its own layer or the layers above.

model (+fp8) ← rewards ← data/tasks ← engine ← train ← rl ← pipeline ← commands/cli
"""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent / "r1lab"
RANK = {"model": 0, "fp8": 0, "fp8_kernels": 0, "fp8_moe": 0, "config_cli": 0, "allocator": 0, "rewards": 1, "data": 2, "tasks": 2, "engine": 3,
        "train": 4, "rl": 5, "pipeline": 6, "commands": 7, "cli": 7, "__main__": 7, "__init__": 0}


def _layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _imports(path: Path, module: str):
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = module.rsplit(".", 1)[0] if path.name != "__init__.py" else module
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("r1lab"):
                    yield alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            if name.startswith("r1lab"):
                yield name


def test_layers_only_import_upwards():
    bad = []
    for path in ROOT.rglob("*.py"):
        rel = path.relative_to(ROOT.parent).with_suffix("")
        module = ".".join(p for p in rel.parts if p != "__init__") if path.name == "__init__.py" else ".".join(rel.parts)
        own = _layer(module)
        if own not in RANK:
            bad.append(f"{module}: layer {own!r} is not in the layer table")
            continue
        for imported in _imports(path, module):
            other = _layer(imported)
            if other in RANK and RANK[other] > RANK[own]:
                bad.append(f"{module} ({own}) imports {imported} ({other})")
    assert bad == [], "\n".join(bad)

