"""Imports only go leftwards: prob < simulate < likelihood < inference, and inside inference
theta < posterior < {image, evaluation, reference, shipped} < cli — every import statement,
function-local ones included, read from the source."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LAYERS = ("prob", "simulate", "likelihood", "inference")
ROOMS = {
    "theta": 0,
    "posterior": 1,
    "image": 2,
    "evaluation": 2,
    "reference": 2,
    "shipped": 2,
    "cli": 3,
}
"""The rank of each room of inference/; a room imports its own and lower ranks only."""


def imports(path: Path) -> list[tuple[int, str]]:
    """(line, imported module) of every import statement in `path`, at any depth."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            base = node.module
            # `from inference.theta import _pixels` imports the module inference.theta._pixels
            found += [(node.lineno, f"{base}.{alias.name}") for alias in node.names]
    return found


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def room(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if parts[0] == "inference" and len(parts) > 1 else None


def sources(*packages: str) -> list[Path]:
    return sorted(p for package in packages for p in (ROOT / package).rglob("*.py"))


def test_import_prob_pulls_in_no_other_layer():
    code = (
        "import sys, prob, prob.io, prob.priors, prob.metrics, prob.datasets\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in "
        "('simulate', 'likelihood', 'inference', 'torch', 'pyro', 'abtem')]\n"
        "print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_the_reader_sees_function_local_imports(tmp_path):
    source = tmp_path / "m.py"
    source.write_text("import a\n\ndef f():\n    from b.c import d\n    import e.f\n")
    assert imports(source) == [(1, "a"), (4, "b.c.d"), (5, "e.f")]


@pytest.mark.parametrize("path", sources(*LAYERS), ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_go_leftwards(path):
    me = module_name(path)
    rank = LAYERS.index(me.split(".")[0])
    wrong = []
    for line, name in imports(path):
        top = name.split(".")[0]
        if top in LAYERS and LAYERS.index(top) > rank:
            wrong.append(f"line {line}: {name} (layer {top} is right of {me.split('.')[0]})")
        if me.startswith("inference") and me != "inference" and top == "inference":
            mine, theirs = room(me), room(name)
            if theirs is None:
                wrong.append(f"line {line}: {name} (the public API is for users, not rooms)")
            elif theirs != mine and ROOMS[theirs] >= ROOMS[mine]:
                wrong.append(f"line {line}: {name} (room {theirs} is not left of {mine})")
    assert not wrong, f"{me}: " + "; ".join(wrong)


def test_every_room_has_a_rank():
    rooms = {room(module_name(p)) for p in sources("inference")} - {None}
    assert rooms == set(ROOMS)


def test_only_tests_and_benchmarks_use_the_references():
    users = {
        module_name(p)
        for p in sources(*LAYERS)
        if room(module_name(p)) != "reference"
        and any(room(name) == "reference" for _, name in imports(p))
    }
    assert users == set()


@pytest.mark.parametrize("path", sorted((ROOT / "examples").glob("*.py")), ids=lambda p: p.name)
def test_examples_use_the_public_api(path):
    used = {name for _, name in imports(path) if name.split(".")[0] == "inference"}
    wrong = {name for name in used if name.split(".")[1] not in ("shipped", *_public())}
    assert not wrong


def _public() -> list[str]:
    import inference

    return inference.__all__
