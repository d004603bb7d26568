"""One version in the package, ``failsafe --version`` and the changelog; a strict docs build.

The Read the Docs configuration builds the docs as strictly as ``make docs``.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

import failsafe

# each test runs a child interpreter (subprocess waits with a real sleep loop)
pytestmark = pytest.mark.real_time

ROOT = Path(__file__).resolve().parent.parent


def test_the_package_the_command_and_the_changelog_agree_on_the_version() -> None:
    printed = subprocess.run(
        [sys.executable, "-c", "from failsafe.cli import main; main(['--version'])"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert printed.stdout.strip() == f"failsafe {failsafe.__version__}"
    changelog = (ROOT / "CHANGELOG.md").read_text()
    versions = re.findall(r"^## \[(\d+\.\d+\.\d+[^\]]*)\]", changelog, flags=re.MULTILINE)
    assert versions, "CHANGELOG.md names no version"
    assert versions[0] == failsafe.__version__
    # the docs site shows the changelog itself, so the docs name the same version
    assert '--8<-- "CHANGELOG.md"' in (ROOT / "docs" / "changelog.md").read_text()


def test_read_the_docs_builds_strictly_with_extras_that_exist() -> None:
    config = yaml.safe_load((ROOT / ".readthedocs.yaml").read_text())
    assert config["version"] == 2
    assert config["mkdocs"]["fail_on_warning"] is True
    assert (ROOT / config["mkdocs"]["configuration"]).is_file()
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    for step in config["python"]["install"]:
        assert set(step.get("extra_requirements", [])) <= set(project["optional-dependencies"])
    assert "readthedocs.io" in project["urls"]["Documentation"]
