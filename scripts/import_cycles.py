"""Fail when any module of the tree imports itself again through others (an import circle).

import-linter's contracts hold the layers of each package; this checks the
whole tree at once, the packages' own `__init__` modules and imports under
`TYPE_CHECKING` included, so a circle anywhere fails `make lint`. It prints
each circle as a chain of modules, shortest first, and exits 1.

    python scripts/import_cycles.py [package ...]   # default: ringkv ringkv_node ringkv_operator
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Mapping

import grimp

PACKAGES = ("ringkv", "ringkv_node", "ringkv_operator")

# Circles known and tolerated, each until the work named. Only a circle made
# of exactly these modules passes; any other, or a larger one, fails.
ALLOWED: set[frozenset[str]] = set()  # none: the CLI's shared helpers live in ringkv.cli.common


def strongly_connected(graph: Mapping[str, Iterable[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components of more than one module, or of a
    module that imports itself (iterative: no recursion limit)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    out: list[list[str]] = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph.get(root, ()))))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1 or node in graph.get(node, ()):
                    out.append(sorted(component))
    return out


def main(argv: list[str]) -> int:
    packages = argv or list(PACKAGES)
    imported = grimp.build_graph(*packages, exclude_type_checking_imports=False)
    graph = {m: imported.find_modules_directly_imported_by(m) for m in imported.modules}
    found = strongly_connected(graph)
    circles = [c for c in found if frozenset(c) not in ALLOWED]
    for component in found:
        if frozenset(component) in ALLOWED:
            print(f"known import circle, tolerated (see ALLOWED): {', '.join(component)}")
    if not circles:
        print(f"no other import circle among {len(graph)} modules of {', '.join(packages)}")
        return 0
    for component in sorted(circles, key=len):
        print(f"import circle of {len(component)} modules:")
        for module in component:
            inside = sorted(graph[module] & set(component))
            print(f"  {module} -> {', '.join(inside)}")
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
