"""``make lint``'s size check: small modules and short functions in the product packages.

Fails (exit status 1, one line per finding) when a Python module under ``gateway/``, ``api/``,
``workers/`` or ``config/`` is over ``MAX_MODULE_LINES`` lines, or a function (sync or async,
nested or a method) is over ``MAX_FUNCTION_LINES`` lines, measured as the AST sees it
(``end_lineno - lineno + 1``: decorators excluded, docstring and body included).

A long function passes only when its docstring says why, in a line starting with ``REASON``
("Long because ...") followed by the reason itself; an empty reason does not count. Keep such
reasons honest and rare: splitting is the default answer.

``KNOWN`` lists the debts that predate this check (issue 12, item 9), by ``path`` for a module
and ``path:function`` for a function. They are reported but do not fail; an entry that no longer
exceeds its limit fails the check until it is removed, so the list only shrinks.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("gateway", "api", "workers", "config")
MAX_MODULE_LINES = 500
MAX_FUNCTION_LINES = 60
REASON = "Long because"

#: Debts that predate the check; remove an entry when it is paid (a stale entry fails).
KNOWN: frozenset[str] = frozenset()


def has_reason(node: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    """Whether the function's docstring carries a non-empty "Long because ..." line."""
    doc = ast.get_docstring(node) or ""
    for line in doc.splitlines():
        text = line.strip()
        if text.startswith(REASON) and text[len(REASON) :].strip(" :,.-"):
            return True
    return False


def findings(name: str, source: str) -> list[tuple[str, str]]:
    """Every size violation in one module's source: (``KNOWN`` key, ``name:line: message``)."""
    found = []
    lines = len(source.splitlines())
    if lines > MAX_MODULE_LINES:
        found.append((name, f"{name}:1: module has {lines} lines (limit {MAX_MODULE_LINES})"))
    for node in ast.walk(ast.parse(source, filename=name)):
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        length = (node.end_lineno or node.lineno) - node.lineno + 1
        if length > MAX_FUNCTION_LINES and not has_reason(node):
            message = (
                f"{name}:{node.lineno}: function {node.name} has {length} lines (limit "
                f'{MAX_FUNCTION_LINES}; split it, or start a docstring line with "{REASON}")'
            )
            found.append((f"{name}:{node.name}", message))
    return found


def verdict(found: list[tuple[str, str]], known: frozenset[str]) -> tuple[int, list[str]]:
    """(exit status, lines to print): new findings and stale ``known`` entries fail."""
    seen = {key for key, _ in found}
    new = [message for key, message in found if key not in known]
    owed = [f"known debt: {message}" for key, message in found if key in known]
    stale = [f"{key}: within its limit now; remove it from KNOWN" for key in sorted(known - seen)]
    return (1 if new or stale else 0), [*owed, *new, *stale]


def main() -> int:
    found = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            found += findings(path.relative_to(ROOT).as_posix(), path.read_text(encoding="utf-8"))
    status, lines = verdict(found, KNOWN)
    for line in lines:
        print(line)
    print(
        f"sizes: {'FAILED' if status else 'ok'}: modules <= {MAX_MODULE_LINES} lines, functions"
        f" <= {MAX_FUNCTION_LINES} lines or with a reason ({len(KNOWN)} known debts)"
    )
    return status


if __name__ == "__main__":
    sys.exit(main())
