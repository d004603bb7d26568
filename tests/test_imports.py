"""The package's public surface and what importing it costs."""

from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
import subprocess
import sys

import failsafe

HEAVY = (
    "httpx",
    "redis",
    "aio_pika",
    "psycopg",
    "sqlalchemy",
    "starlette",
    "opentelemetry",
    "prometheus_client",
    "pybreaker",
)


def test_import_failsafe_imports_no_client_library() -> None:
    """Importing failsafe loads no HTTP, broker or database client, nor pybreaker."""
    code = (
        "import sys, failsafe\n"
        f"heavy = {HEAVY!r}\n"
        "print(','.join(sorted({m.split('.')[0] for m in sys.modules} & set(heavy))))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_all_names_exist_and_are_documented() -> None:
    """Every public module's ``__all__`` names exist and carry a docstring."""
    for info in pkgutil.walk_packages(failsafe.__path__, "failsafe."):
        if (
            any(part.startswith("_") for part in info.name.split("."))
            or info.name == "failsafe.demo"
        ):
            continue
        module = importlib.import_module(info.name)
        assert module.__doc__, info.name
        for name in module.__all__:
            obj = getattr(module, name)
            if inspect.isclass(obj) or inspect.isfunction(obj):
                assert obj.__doc__, f"{info.name}.{name} has no docstring"


def test_public_constants_are_documented() -> None:
    """Every constant a module lists in ``__all__`` is followed by its docstring.

    An attribute docstring (a string right after the assignment) is what the API reference
    shows under the constant's name; without one the reference shows the name alone.
    """
    undocumented = []
    for info in pkgutil.walk_packages(failsafe.__path__, "failsafe."):
        if any(part.startswith("_") for part in info.name.split(".")):
            continue
        module = importlib.import_module(info.name)
        source = inspect.getsource(module)
        body = ast.parse(source).body
        exported = set(getattr(module, "__all__", ()))
        for statement, following in zip(body, [*body[1:], None], strict=True):
            if isinstance(statement, ast.Assign) and len(statement.targets) == 1:
                target = statement.targets[0]
            elif isinstance(statement, ast.AnnAssign):
                target = statement.target
            else:
                continue
            if not isinstance(target, ast.Name) or target.id not in exported:
                continue
            documented = (
                isinstance(following, ast.Expr)
                and isinstance(following.value, ast.Constant)
                and isinstance(following.value.value, str)
                and following.value.value.strip()
            )
            if not documented:
                undocumented.append(f"{info.name}.{target.id}")
    assert undocumented == []


def test_top_level_reexports_everything_it_lists() -> None:
    """``failsafe.__all__`` is sorted-unique and every name resolves."""
    assert len(set(failsafe.__all__)) == len(failsafe.__all__)
    for name in failsafe.__all__:
        assert hasattr(failsafe, name), name


def test_package_is_typed() -> None:
    """The wheel ships ``py.typed`` so type checkers read the annotations."""
    from importlib.resources import files

    assert files("failsafe").joinpath("py.typed").is_file()
