"""The import graph: only app.py opens databases and builds senders; business/ never
imports senders/. An ``ast`` walk over the package, so a reintroduced arrow fails here."""

from __future__ import annotations

import ast
from pathlib import Path

import klaviyo_sync

PACKAGE = Path(klaviyo_sync.__file__).parent
#: Stages whose modules take their engines and senders as arguments.
TAKE_THEIR_PARTS = ("business", "parsers", "senders")
#: The engine factories app.py calls (they are where an engine is made).
ENGINE_FACTORIES = {"business/db.py"}
ENGINE_OPENERS = {"create_engine", "open_state", "open_business", "open_writer"}
SENDERS = {"KlaviyoClient", "DryRunSender"}


def imported_modules(tree: ast.AST) -> set[str]:
    """Every module (and ``module.name``) an import statement names."""
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def called_names(tree: ast.AST) -> set[str]:
    """The names called: ``f(...)`` gives f, ``x.f(...)`` gives f."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            if isinstance(func, ast.Name):
                names.add(func.id)
            elif isinstance(func, ast.Attribute):
                names.add(func.attr)
    return names


def violations(relative: str, source: str) -> list[str]:
    """What ``relative`` (a path under klaviyo_sync/) does that its folder must not."""
    tree = ast.parse(source)
    stage = relative.split("/")[0]
    found: list[str] = []
    imports = imported_modules(tree)
    if stage == "business":
        found += [f"{relative} imports {m}" for m in sorted(imports)
                  if m == "klaviyo_sync.senders" or m.startswith("klaviyo_sync.senders.")]
    if stage in TAKE_THEIR_PARTS and relative not in ENGINE_FACTORIES:
        calls = called_names(tree)
        found += [f"{relative} imports sqlalchemy.create_engine" for m in imports
                  if m == "sqlalchemy.create_engine"]
        found += [f"{relative} calls {name}" for name in sorted(calls & ENGINE_OPENERS)]
        found += [f"{relative} builds a {name}" for name in sorted(calls & SENDERS)]
    if relative != "app.py":
        found += [f"{relative} builds a {name}" for name in sorted(called_names(tree) & SENDERS)]
    return sorted(set(found))


def package_violations() -> list[str]:
    found: list[str] = []
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE).as_posix()
        found += violations(relative, path.read_text(encoding="utf-8"))
    return found


def test_only_the_wiring_opens_databases_and_builds_senders() -> None:
    assert package_violations() == []


def test_the_check_sees_each_forbidden_arrow() -> None:
    # The same walk on modules that do what the package must not: each one is reported.
    upward = "from klaviyo_sync.senders import caps_of\n"
    engine = "import sqlalchemy as sa\nengine = sa.create_engine('sqlite://')\n"
    imported = "from sqlalchemy import create_engine\n"
    opened = "from klaviyo_sync.state.db import open_state\nopen_state('sqlite://')\n"
    sender = "from klaviyo_sync.senders.dryrun import DryRunSender\nDryRunSender('x')\n"
    assert violations("business/rules.py", upward) == [
        "business/rules.py imports klaviyo_sync.senders",
        "business/rules.py imports klaviyo_sync.senders.caps_of"]
    assert violations("parsers/x.py", engine) == ["parsers/x.py calls create_engine"]
    assert violations("senders/x.py", imported) == [
        "senders/x.py imports sqlalchemy.create_engine"]
    assert violations("business/x.py", opened) == ["business/x.py calls open_state"]
    assert violations("daemon/x.py", sender) == ["daemon/x.py builds a DryRunSender"]
    assert violations("app.py", sender) == []
    assert violations("daemon/x.py", upward + engine) == []  # the daemon may: it is wiring


def test_no_import_of_our_own_modules_is_guarded() -> None:
    # Every module of the package always ships: `except ImportError` around one hides a
    # broken build instead of failing it.
    guarded: list[str] = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.Try):
                continue
            names = {ast.unparse(h.type) for h in node.handlers if h.type is not None}
            ours = imported_modules(ast.Module(body=node.body, type_ignores=[]))
            if names & {"ImportError", "ModuleNotFoundError"} and any(
                    m.startswith("klaviyo_sync") for m in ours):
                guarded.append(path.relative_to(PACKAGE).as_posix())
    assert guarded == []
