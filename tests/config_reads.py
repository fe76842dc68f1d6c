"""The config fields the toolkit's code reads, found in its source with ``ast``.

A read is ``config_value(<config>, <path>, ...)``, or an attribute chain ``<...>config.section.field`` (also
``exp.config...``). A path may be a literal, an f-string, a loop variable over a literal tuple, a conditional
expression of literals, or a parameter of a local helper (a lambda or function that passes its parameter into the
path): then each call of the helper is resolved the same way. What cannot be resolved is reported, so the code keeps
its field names literal and this inventory complete.
"""

from __future__ import annotations

import ast
import itertools
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("base_lib", "sde_lib", "data_lib", "models", "samplers", "sample_quality", "train_lib", "jobs")
SECTIONS = ("training", "sampling", "eval", "data", "model", "optim", "classifier")
TOP_LEVEL = ("seed", "device", "num_threads")


def _attribute_chain(node: ast.AST) -> list[str] | None:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    parts.append(node.id)
    return parts[::-1]


def _field_from_chain(chain: list[str]) -> str | None:
    """``config.eval.ckpt`` -> ``'eval.ckpt'``; the root must be a name ending in ``config``."""
    for i, part in enumerate(chain[:-1]):
        if part.endswith("config"):
            rest = chain[i + 1:]
            if rest[0] in SECTIONS and len(rest) >= 2 and not rest[1].startswith("_") and rest[1] not in ("keys", "get", "items", "unlocked", "to_dict"):
                return f"{rest[0]}.{rest[1]}"
            if rest[0] in TOP_LEVEL:
                return rest[0]
    return None


class _Scope:
    """Parents of every node of one module, to resolve names against their enclosing loops and functions."""

    def __init__(self, tree: ast.AST):
        self.parent: dict[ast.AST, ast.AST] = {}
        for node in ast.walk(tree):
            for child in ast.iter_child_nodes(node):
                self.parent[child] = node

    def enclosing(self, node: ast.AST):
        while node in self.parent:
            node = self.parent[node]
            yield node


def _strings(node: ast.AST) -> list[str] | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return [node.value]
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        out = []
        for element in node.elts:
            values = _strings(element)
            if values is None:
                return None
            out += values
        return out
    return None


class _Resolver:
    def __init__(self, tree: ast.AST):
        self.tree, self.scope = tree, _Scope(tree)
        self.helpers: dict[str, tuple[ast.AST, list[str]]] = {}  # name -> (function node, parameter names)
        for node in ast.walk(tree):
            if isinstance(node, ast.Assign) and isinstance(node.value, ast.Lambda) and len(node.targets) == 1 \
                    and isinstance(node.targets[0], ast.Name):
                self.helpers[node.targets[0].id] = (node.value, [a.arg for a in node.value.args.args])
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                self.helpers.setdefault(node.name, (node, [a.arg for a in node.args.args]))

    def values(self, node: ast.AST, context: ast.AST) -> list[str] | None:
        """Every string ``node`` (an expression at ``context``) can take, or None if unknown."""
        literal = _strings(node)
        if literal is not None:
            return literal
        if isinstance(node, ast.IfExp):
            a, b = self.values(node.body, context), self.values(node.orelse, context)
            return None if a is None or b is None else a + b
        if isinstance(node, ast.JoinedStr):
            pieces = []
            for part in node.values:
                if isinstance(part, ast.Constant):
                    pieces.append([str(part.value)])
                else:
                    resolved = self.values(part.value, context)
                    if resolved is None:
                        return None
                    pieces.append(resolved)
            return ["".join(p) for p in itertools.product(*pieces)]
        if isinstance(node, ast.Name):
            return self._name(node.id, context)
        return None

    def _name(self, name: str, context: ast.AST) -> list[str] | None:
        for outer in self.scope.enclosing(context):
            if isinstance(outer, (ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp)):
                for generator in outer.generators:
                    if isinstance(generator.target, ast.Name) and generator.target.id == name:
                        return self._iterated(generator.iter)
            if isinstance(outer, ast.For):
                if isinstance(outer.target, ast.Name) and outer.target.id == name:
                    return self._iterated(outer.iter)
                if isinstance(outer.target, ast.Tuple) and outer.target.elts and \
                        isinstance(outer.target.elts[0], ast.Name) and outer.target.elts[0].id == name:
                    return self._iterated(outer.iter)  # for key, value in TABLE.items()
            if isinstance(outer, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                params = [a.arg for a in outer.args.args]
                if name in params:
                    return self._parameter(outer, params.index(name))
                for statement in ast.walk(outer):
                    if isinstance(statement, ast.Assign) and any(
                            isinstance(t, ast.Name) and t.id == name for t in statement.targets):
                        return self.values(statement.value, statement)
        return None

    def _iterated(self, node: ast.AST) -> list[str] | None:
        """The strings a loop runs over: a literal, or the keys of a module-level dict literal (``TABLE``,
        ``TABLE.items()``, ``TABLE.keys()``)."""
        literal = _strings(node)
        if literal is not None:
            return literal
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in ("items", "keys"):
            node = node.func.value
        if isinstance(node, ast.Name):
            for statement in getattr(self.tree, "body", []):
                targets = statement.targets if isinstance(statement, ast.Assign) else \
                    [statement.target] if isinstance(statement, ast.AnnAssign) else []
                if any(isinstance(t, ast.Name) and t.id == node.id for t in targets) and \
                        isinstance(statement.value, ast.Dict):
                    keys = [_strings(k) for k in statement.value.keys if k is not None]
                    return None if any(k is None for k in keys) else [s for k in keys for s in k]
        return None

    def _parameter(self, function: ast.AST, index: int) -> list[str] | None:
        """The values a helper's parameter takes over every call of the helper in the module."""
        names = [n for n, (f, _) in self.helpers.items() if f is function]
        out: list[str] = []
        calls = [c for c in ast.walk(self.tree) if isinstance(c, ast.Call) and isinstance(c.func, ast.Name)
                 and c.func.id in names]
        if not calls:
            return None
        for call in calls:
            if index >= len(call.args):
                return None
            resolved = self.values(call.args[index], call)
            if resolved is None:
                return None
            out += resolved
        return out


def fields_read(path: Path) -> tuple[dict[str, list[str]], list[str]]:
    """``({field: [where, ...]}, [unresolved reads])`` of one source file."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    resolver = _Resolver(tree)
    where = lambda node: f"{path.relative_to(ROOT)}:{node.lineno}"  # noqa: E731
    found: dict[str, list[str]] = {}
    unresolved: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "config_value" \
                and len(node.args) >= 2:
            paths = resolver.values(node.args[1], node)
            if paths is None:
                unresolved.append(where(node))
            for field in paths or ():
                found.setdefault(field, []).append(where(node))
        elif isinstance(node, ast.Attribute):
            chain = _attribute_chain(node)
            field = _field_from_chain(chain) if chain else None
            if field is not None:
                found.setdefault(field, []).append(where(node))
    return found, unresolved


def all_fields_read() -> tuple[dict[str, list[str]], list[str]]:
    """Every field read by the toolkit's packages, with where; and the reads that could not be resolved."""
    found: dict[str, list[str]] = {}
    unresolved: list[str] = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            fields, missing = fields_read(path)
            for field, places in fields.items():
                found.setdefault(field, []).extend(places)
            unresolved.extend(missing)
    return found, unresolved
