"""The package's public surface and what importing it costs."""

from __future__ import annotations

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


def test_top_level_reexports_everything_it_lists() -> None:
    """``failsafe.__all__`` is sorted-unique and every name resolves."""
    assert len(set(failsafe.__all__)) == len(failsafe.__all__)
    for name in failsafe.__all__:
        assert hasattr(failsafe, name), name


def test_package_is_typed() -> None:
    """The wheel ships ``py.typed`` so type checkers read the annotations."""
    from importlib.resources import files

    assert files("failsafe").joinpath("py.typed").is_file()
