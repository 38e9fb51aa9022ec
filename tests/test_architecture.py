"""The direction of the code: import-linter's contracts, and no import cycles at all."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import grimp

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("simsite", "catalog", "search", "signatures", "web", "legacy")


def _contract_sources(name: str) -> set[str]:
    text = (ROOT / ".importlinter").read_text()
    section = text.split(f"[importlinter:contract:{name}]", 1)[1].split("[importlinter:contract:", 1)[0]
    lines = section.split("source_modules =", 1)[1].split("forbidden_modules", 1)[0]
    return {line.strip() for line in lines.splitlines() if line.strip()}


def test_import_contracts_hold():
    result = subprocess.run(
        [str(Path(sys.executable).parent / "lint-imports"), "--no-cache"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "broken" in result.stdout and " 0 broken" in result.stdout


def test_no_import_cycles_including_imports_inside_functions():
    graph = grimp.build_graph(*PACKAGES, cache_dir=None)
    modules = sorted(graph.modules)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(module: str) -> None:  # Tarjan's strongly connected components
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for imported in graph.find_modules_directly_imported_by(module):
            if imported not in index:
                visit(imported)
                low[module] = min(low[module], low[imported])
            elif imported in on_stack:
                low[module] = min(low[module], index[imported])
        if low[module] == index[module]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == module:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    sys.setrecursionlimit(10_000)
    for module in modules:
        if module not in index:
            visit(module)
    assert cycles == []


def test_the_apps_one_way_contracts_hold_whole_packages_not_chosen_modules():
    assert _contract_sources("catalog") == {"catalog"}
    assert _contract_sources("search-domain") == {"search"}
