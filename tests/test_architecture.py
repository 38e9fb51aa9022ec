"""The direction of the code: import-linter's contracts, and no import cycles at all."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import grimp

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("simsite", "catalog", "search", "signatures", "web", "legacy")
# Catalog modules that are interfaces (may use search); the rest is domain code, held by
# the "catalog-domain" contract in .importlinter.
CATALOG_INTERFACES = {"catalog.apis", "catalog.admin", "catalog.forms", "catalog.urls", "catalog.apps",
                      "catalog.management", "catalog.migrations"}  # fmt: skip


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


def test_every_catalog_module_is_either_an_interface_or_held_by_the_domain_contract():
    graph = grimp.build_graph("catalog", cache_dir=None)
    domain = _contract_sources("catalog-domain")
    top_level = {m for m in graph.modules if m.count(".") == 1}
    unclassified = {m for m in top_level if m not in domain and m not in CATALOG_INTERFACES}
    assert unclassified == set(), "add these modules to .importlinter's catalog-domain contract or to the interfaces"
