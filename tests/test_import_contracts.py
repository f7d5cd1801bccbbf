"""Import contracts, read from the source with `ast` (nothing is imported):

- layers point one way: `ops` imports nothing from `models` or `pipeline`; `models` nothing from `pipeline`;
- commands (the `python -m pipeline.<cmd>` entry points) are imported by no library module;
- no import cycle among `pipeline` modules, counting the imports that run when a module is imported
  (module level, class bodies, top-level if/try; not function bodies, not `if TYPE_CHECKING:`);
- `ops` and `models` import neither Ray nor MLflow (they run with torch, triton, numpy and scipy alone);
- `ops` and `models` never write the process environment (`import ops` changes nothing; the CPU path's settings
  are given to processes where they start, docs/ops.md "Backends");
- `models` knows no device: no `.device.type`, `.is_cuda` or `torch.cuda` in its code (the ops' dispatcher and
  `ops.compute_dtype` decide from the tensor, docs/ops.md "Backends").

The layer and command contracts count every import, function-local ones included: a local import is still a
dependency. A failure prints the offending import with file and line, or the cycle as a chain.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("ops", "models", "pipeline")
# The `python -m` entry points: thin commands over the library, imported by nobody but themselves.
COMMANDS = ("pipeline.train", "pipeline.tune", "pipeline.dataset", "pipeline.generate", "pipeline.registry",
            "pipeline.metrics.__main__")
# Known violations waiting for their fix, each with the reason; the test below fails once one is gone, so that the
# entry is removed with the fix. None at present.
PENDING_COMMAND_IMPORTS: set[tuple[str, str]] = set()


@dataclass(frozen=True)
class Import:
    source: str  # importing module
    target: str  # imported module (a module of ours, resolved to the deepest existing module)
    line: int
    module_level: bool  # runs when `source` is imported

    def where(self) -> str:
        path = _modules()[self.source].relative_to(ROOT)
        return f"{path}:{self.line}: {self.source} -> {self.target}"


_MODULES: dict[str, Path] | None = None


def _modules() -> dict[str, Path]:
    """Dotted name -> file, for every module of our packages."""
    global _MODULES
    if _MODULES is None:
        found = {}
        for pkg in PACKAGES:
            for path in sorted((ROOT / pkg).rglob("*.py")):
                parts = list(path.relative_to(ROOT).with_suffix("").parts)
                if parts[-1] == "__init__":
                    parts.pop()
                found[".".join(parts)] = path
        _MODULES = found
    return _MODULES


def _resolve(name: str) -> str | None:
    """The deepest module of ours that `name` (a module or a module attribute) lies in; None if not ours."""
    mods = _modules()
    while name:
        if name in mods:
            return name
        name = name.rpartition(".")[0]
    return None


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports_of(module: str) -> list[Import]:
    path = _modules()[module]
    tree = ast.parse(path.read_text(), filename=str(path))
    is_pkg = path.name == "__init__.py"
    out: list[Import] = []

    def add(target: str | None, node: ast.stmt, module_level: bool) -> None:
        if target is not None and target != module:
            out.append(Import(module, target, node.lineno, module_level))

    def visit(body: list[ast.stmt], module_level: bool) -> None:
        for node in body:
            if isinstance(node, ast.Import):
                for alias in node.names:
                    add(_resolve(alias.name), node, module_level)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative import
                    anchor = module.split(".") if is_pkg else module.split(".")[:-1]
                    anchor = anchor[:len(anchor) - (node.level - 1)]
                    base = ".".join(anchor + ([base] if base else []))
                for alias in node.names:
                    # `from pkg import sub` imports the submodule pkg.sub; `from mod import name` the module.
                    add(_resolve(f"{base}.{alias.name}") if alias.name != "*" else _resolve(base), node, module_level)
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                visit(node.body, False)
            elif isinstance(node, ast.ClassDef):
                visit(node.body, module_level)
            elif isinstance(node, ast.If):
                visit(node.body, module_level and not _is_type_checking(node.test))
                visit(node.orelse, module_level)
            elif isinstance(node, (ast.Try, getattr(ast, "TryStar", ast.Try))):
                for part in (node.body, node.orelse, node.finalbody, *[h.body for h in node.handlers]):
                    visit(part, module_level)
            elif isinstance(node, (ast.With, ast.For, ast.While)):
                visit(node.body, module_level)
                visit(getattr(node, "orelse", []), module_level)

    visit(tree.body, True)
    return out


def _all_imports() -> list[Import]:
    return [imp for m in _modules() for imp in _imports_of(m)]


def _in(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def test_ops_import_neither_models_nor_pipeline():
    bad = sorted({i.where() for i in _all_imports() if _in(i.source, "ops") and (_in(i.target, "models")
                                                                                 or _in(i.target, "pipeline"))})
    assert not bad, "ops must not depend on models or pipeline:\n" + "\n".join(bad)


def test_models_do_not_import_pipeline():
    bad = sorted({i.where() for i in _all_imports() if _in(i.source, "models") and _in(i.target, "pipeline")})
    assert not bad, "models must not depend on pipeline:\n" + "\n".join(bad)


def test_no_library_module_imports_a_command():
    bad = sorted({i.where() for i in _all_imports() if i.target in COMMANDS and i.source != i.target
                  and (i.source, i.target) not in PENDING_COMMAND_IMPORTS})
    assert not bad, ("commands (python -m entry points) are imported by no other module; move what is shared "
                     "into the library:\n" + "\n".join(bad))


def test_pending_command_imports_still_exist():
    """A fixed violation must leave PENDING_COMMAND_IMPORTS, so that it cannot come back unnoticed."""
    seen = {(i.source, i.target) for i in _all_imports()}
    gone = PENDING_COMMAND_IMPORTS - seen
    assert not gone, f"fixed, remove from PENDING_COMMAND_IMPORTS: {sorted(gone)}"


def _cycles(edges: dict[str, list[Import]]) -> list[list[Import]]:
    """One import chain per strongly connected component with a cycle (Tarjan, then a shortest cycle in it)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def strongconnect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for imp in edges.get(v, []):
            w = imp.target
            if w not in index:
                strongconnect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                components.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            strongconnect(v)

    chains = []
    for comp in components:
        members = set(comp)
        start = comp[0]
        # Breadth-first from `start` back to `start` inside the component: the shortest cycle through it.
        paths: dict[str, list[Import]] = {start: []}
        frontier = [start]
        found = None
        while frontier and found is None:
            nxt = []
            for v in frontier:
                for imp in edges.get(v, []):
                    if imp.target == start:
                        found = paths[v] + [imp]
                        break
                    if imp.target in members and imp.target not in paths:
                        paths[imp.target] = paths[v] + [imp]
                        nxt.append(imp.target)
                if found:
                    break
            frontier = nxt
        chains.append(found)
    return chains


def test_no_import_cycles_in_pipeline():
    edges: dict[str, list[Import]] = {}
    for imp in _all_imports():
        if imp.module_level and _in(imp.source, "pipeline") and _in(imp.target, "pipeline"):
            edges.setdefault(imp.source, []).append(imp)
    cycles = _cycles(edges)
    text = "\n\n".join("cycle:\n  " + "\n  ".join(i.where() for i in chain) for chain in cycles)
    assert not cycles, "import cycles among pipeline modules (module-level imports):\n" + text


def test_the_checker_sees_imports():
    """The contracts above would pass vacuously if the parser found nothing: it must see known edges."""
    edges = {(i.source, i.target) for i in _all_imports()}
    assert ("pipeline.training.loop", "models") in edges or any(s == "pipeline.training.loop" and _in(t, "models")
                                                                for s, t in edges)
    assert any(s == "pipeline.metrics.core" and t == "pipeline.metrics.equivariance" for s, t in edges)
    assert _cycles({"a": [Import("a", "b", 1, True)], "b": [Import("b", "a", 2, True)]})


def _external_imports(package: str) -> list[tuple[str, int, str]]:
    """(file, line, top-level name) of every import in `package` of a module that is not ours, function-local
    ones included."""
    out = []
    for path in sorted((ROOT / package).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
                names = [node.module]
            for name in names:
                out.append((str(path.relative_to(ROOT)), node.lineno, name.partition(".")[0]))
    return out


def test_ops_and_models_import_neither_ray_nor_mlflow():
    seen = _external_imports("ops") + _external_imports("models")
    assert any(top == "torch" for _, _, top in seen)  # the checker sees imports at all
    bad = sorted(f"{f}:{line}: imports {top}" for f, line, top in seen if top in ("ray", "mlflow", "pipeline"))
    assert not bad, "ops and models run without Ray, MLflow or pipeline:\n" + "\n".join(bad)


def _device_branches(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, text) of every `<expr>.device.type`, `<expr>.is_cuda` and `torch.cuda` in `tree`."""
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            if node.attr == "type" and isinstance(node.value, ast.Attribute) and node.value.attr == "device":
                out.append((node.lineno, ast.unparse(node)))
            elif node.attr == "is_cuda":
                out.append((node.lineno, ast.unparse(node)))
            elif node.attr == "cuda" and isinstance(node.value, ast.Name) and node.value.id == "torch":
                out.append((node.lineno, ast.unparse(node)))
    return out


def test_models_know_no_device():
    probe = ast.parse("if x.device.type == 'cuda' or w.is_cuda or torch.cuda.is_available(): pass")
    assert len(_device_branches(probe)) == 3  # the checker finds what it looks for
    bad = []
    for path in sorted((ROOT / "models").rglob("*.py")):
        for line, text in _device_branches(ast.parse(path.read_text(), filename=str(path))):
            bad.append(f"{path.relative_to(ROOT)}:{line}: {text}")
    assert not bad, ("models/ calls ops and knows no device; choose by device in ops/ (the dispatcher, "
                     "ops.compute_dtype):\n" + "\n".join(bad))


def _environment_writes(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, text) of every write to the process environment: `os.environ[...] = / del`, `os.environ.<mutator>(...)`,
    `os.putenv`/`os.unsetenv`."""
    out = []

    def is_environ(e: ast.expr) -> bool:
        return isinstance(e, ast.Attribute) and e.attr == "environ"

    for node in ast.walk(tree):
        if isinstance(node, (ast.Assign, ast.AugAssign, ast.Delete)):
            targets = node.targets if isinstance(node, (ast.Assign, ast.Delete)) else [node.target]
            out += [(node.lineno, ast.unparse(t)) for t in targets
                    if isinstance(t, ast.Subscript) and is_environ(t.value)]
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            f = node.func
            if (is_environ(f.value) and f.attr in ("setdefault", "update", "pop", "popitem", "clear")) or \
                    f.attr in ("putenv", "unsetenv"):
                out.append((node.lineno, ast.unparse(node)))
    return out


def test_ops_and_models_do_not_write_the_environment():
    probe = ast.parse("os.environ['A'] = '1'\nos.environ.setdefault('B', '1')\nos.putenv('C', '1')\n"
                      "x = os.environ.get('D')")
    assert len(_environment_writes(probe)) == 3  # the checker finds what it looks for (and not a read)
    bad = []
    for package in ("ops", "models"):
        for path in sorted((ROOT / package).rglob("*.py")):
            for line, text in _environment_writes(ast.parse(path.read_text(), filename=str(path))):
                bad.append(f"{path.relative_to(ROOT)}:{line}: {text}")
    assert not bad, ("ops/ and models/ leave the process environment alone; set what a process needs where it "
                     "starts (ops.cpu_process_env(), pipeline/ray_session.py):\n" + "\n".join(bad))
