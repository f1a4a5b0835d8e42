"""The package's import graph stays layered: no module imports back up (no cycles), the score cache knows the
reranker contract but not HeadRank, folders, the hub or training, and FitParts stands alone. Read from the source
(every import, also inside functions; ``if TYPE_CHECKING:`` blocks left out), so nothing is imported here."""
import ast
import pathlib

import pyterrier_headrank

from conftest import ROOT

PACKAGE = ROOT / "pyterrier_headrank"


def _module_name(path: pathlib.Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking(node) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def _imports(path: pathlib.Path, modules: set) -> set:
    """The package's modules that ``path`` imports (a name imported from a package counts as its submodule when
    there is one)."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found, todo = set(), [ast.parse(path.read_text())]
    while todo:
        node = todo.pop()
        for child in ast.iter_child_nodes(node):
            if not _is_type_checking(child):
                todo.append(child)
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name in modules}
        elif isinstance(node, ast.ImportFrom):
            base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
            target = f"{base}.{node.module}" if node.level and node.module else (base if node.level else node.module)
            for alias in node.names:
                found |= {f"{target}.{alias.name}"} & modules or ({target} & modules)
    return found - {name}


def import_graph() -> dict:
    paths = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {name: _imports(path, set(paths)) for name, path in paths.items()}


def _cycle(graph: dict):
    """One import cycle of ``graph`` as a list of modules, or None."""
    state = {}

    def visit(node, trail):
        state[node] = "open"
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                return trail[trail.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt, trail + [nxt])
                if found:
                    return found
        state[node] = "done"
        return None

    for start in sorted(graph):
        if start not in state:
            found = visit(start, [start])
            if found:
                return found
    return None


def test_the_graph_is_read():
    graph = import_graph()
    assert "pyterrier_headrank.listwise" in graph["pyterrier_headrank.attention_ranker"]
    assert "pyterrier_headrank.headrank" in graph["pyterrier_headrank.artifact"]
    assert _cycle({"a": {"b"}, "b": {"a"}}) == ["a", "b", "a"], "the cycle check can fail"


def test_no_import_cycles():
    assert _cycle(import_graph()) is None


def test_the_cache_knows_the_contract_not_the_rerankers():
    forbidden = ("headrank", "attention_ranker", "artifact", "hub", "folder", "registry", "training", "baselines")
    for name, imported in import_graph().items():
        if name.startswith("pyterrier_headrank.cache"):
            bad = {m for m in imported if m.split(".")[1] in forbidden}
            assert not bad, f"{name} imports {sorted(bad)}"


def test_fit_parts_is_a_leaf_and_the_package_face_imports_lazily():
    graph = import_graph()
    assert graph["pyterrier_headrank.fit_parts"] == set()
    assert graph["pyterrier_headrank"] == {"pyterrier_headrank.version"}
    (assigned,) = [node.value for node in ast.parse((PACKAGE / "__init__.py").read_text()).body
                   if isinstance(node, ast.Assign) and ast.unparse(node.targets[0]) == "__all__"]
    assert isinstance(assigned, ast.List) and all(isinstance(e, ast.Constant) for e in assigned.elts), \
        "__all__ is a literal list, so that tools read it"
    assert [e.value for e in assigned.elts] == pyterrier_headrank.__all__
    for name in pyterrier_headrank.__all__:
        assert getattr(pyterrier_headrank, name) is not None, name
