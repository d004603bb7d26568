"""Each optional feature, imported without its extra, names the extra to install.

Every case runs in a fresh interpreter where the dependency is made unimportable
(``sys.modules[name] = None``), as on a machine where it was never installed.
"""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from failsafe._extras import EXTRAS

# each test runs a child interpreter (subprocess waits with a real sleep loop)
pytestmark = pytest.mark.real_time

ROOT = Path(__file__).resolve().parent.parent

CASES = [
    ("failsafe.http", "httpx", "http"),
    ("failsafe.errors", "httpx", "errors"),
    ("failsafe.errors.service", "starlette", "errors"),
    ("failsafe.errors.review", "starlette", "errors"),
    ("failsafe.errors.api", "starlette", "errors"),
    ("failsafe.errors.postgres", "psycopg", "postgres"),
    ("failsafe.errors.postgres", "psycopg_pool", "postgres"),
    ("failsafe.queue.rabbitmq", "aio_pika", "rabbitmq"),
    ("failsafe.opentelemetry", "opentelemetry", "otel"),
    ("failsafe.prometheus", "prometheus_client", "prometheus"),
]


@pytest.mark.parametrize(("module", "blocked", "extra"), CASES)
def test_a_missing_dependency_names_the_extra(module: str, blocked: str, extra: str) -> None:
    code = (
        f"import sys; sys.modules[{blocked!r}] = None\n"
        f"try:\n    import {module}\n"
        "except ImportError as exc:\n    print(exc.name); print(exc)\n"
        "else:\n    print('imported')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    name, message = done.stdout.strip().split("\n", 1)
    assert name == blocked
    assert f"pip install 'failsafe-kit[{extra}]'" in message
    assert f"{blocked} is not installed" in message


def test_a_shared_breaker_without_redis_names_the_extra() -> None:
    code = (
        "import sys; sys.modules['redis'] = None\n"
        "from failsafe.circuit_breaker import redis_storage\n"
        "try:\n    redis_storage('redis://127.0.0.1:6379/0', namespace='t')\n"
        "except ImportError as exc:\n    print(exc)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert "pip install 'failsafe-kit[redis]'" in done.stdout


def test_the_core_imports_without_any_extra() -> None:
    blocked = [
        "httpx",
        "starlette",
        "psycopg",
        "aio_pika",
        "redis",
        "opentelemetry",
        "prometheus_client",
    ]
    code = (
        f"import sys\nfor name in {blocked!r}: sys.modules[name] = None\n"
        "import failsafe, failsafe.queue, failsafe.testing\nprint('ok')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.strip() == "ok"


def test_every_extra_is_listed_in_the_docs_and_in_all() -> None:
    """The getting-started table lists every extra; ``all`` installs every runtime one."""
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    runtime = set(EXTRAS)
    assert runtime <= set(extras)
    assert extras["all"] == [f"failsafe-kit[{','.join(sorted(runtime))}]"]
    page = (ROOT / "docs" / "getting-started.md").read_text()
    for extra in [*sorted(runtime), "all"]:
        assert f"`failsafe-kit[{extra}]`" in page, extra
