"""Every ```python block in README.md and docs/ runs, as written, in a fresh namespace.

A block is skipped only when the line before its opening fence (blank lines aside) is the
HTML comment ``<!-- no-test -->``; keep that for the few examples that run until stopped (a
consumer, a service). A block that talks to a server the test suite has (PostgreSQL, Redis,
RabbitMQ on loopback) says so with ``<!-- needs: redis -->`` (names separated by spaces) and
runs, with that pytest marker. Blocks run under the suite's real-sleep guard, so they must
wait on ``FakeClock`` or ``Backoff.none()``; an async block runs its own ``asyncio.run``.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NO_TEST = "<!-- no-test -->"
_NEEDS = re.compile(r"^<!-- needs: (?P<servers>[a-z ]+) -->$")
SERVERS = frozenset({"postgres", "redis", "rabbitmq"})
_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})[ \t]*(?P<info>[^`\s]*)")


def collect_blocks(text: str) -> list[tuple[int, str, bool]]:
    """Return ``(line, code, skipped)`` for each ```python block of a Markdown text.

    ``line`` is the 1-based line of the opening fence. Fences of other languages are
    stepped over whole, so a python fence shown inside a ```markdown block is not taken.
    """
    blocks: list[tuple[int, str, bool]] = []
    lines = text.splitlines()
    previous = ""  # the last non-blank line outside a fence
    i = 0
    while i < len(lines):
        opening = _FENCE.match(lines[i])
        if opening is None:
            if lines[i].strip():
                previous = lines[i].strip()
            i += 1
            continue
        indent, fence, info = opening["indent"], opening["fence"], opening["info"]
        body: list[str] = []
        j = i + 1
        while j < len(lines):
            stripped = lines[j].strip()
            if stripped.startswith(fence) and not stripped.strip(fence[0]):
                break
            body.append(lines[j][len(indent) :] if lines[j].startswith(indent) else lines[j])
            j += 1
        if info == "python":
            blocks.append((i + 1, "\n".join(body) + "\n", previous == NO_TEST))
        previous = ""
        i = j + 1
    return blocks


def _documents() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def needs(text: str) -> dict[int, frozenset[str]]:
    """The servers each python block of a Markdown text needs, by its fence's line."""
    found: dict[int, frozenset[str]] = {}
    previous = ""
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if stripped.startswith("```python") and previous:
            match = _NEEDS.match(previous)
            if match is not None:
                servers = frozenset(match["servers"].split())
                unknown = servers - SERVERS
                assert not unknown, f"line {number}: unknown servers {sorted(unknown)}"
                found[number] = servers
        if stripped:
            previous = stripped
    return found


def _cases() -> list[pytest.ParameterSet]:
    cases = []
    for path in _documents():
        name = path.relative_to(ROOT).as_posix()
        text = path.read_text(encoding="utf-8")
        servers = needs(text)
        for line, code, skipped in collect_blocks(text):
            if not skipped:
                marks = [getattr(pytest.mark, s) for s in sorted(servers.get(line, ()))]
                cases.append(pytest.param(name, line, code, id=f"{name}:{line}", marks=marks))
    return cases


CASES = _cases()


@pytest.mark.parametrize(("document", "line", "code"), CASES)
def test_doc_example_runs(document: str, line: int, code: str) -> None:
    """The python block at ``document:line`` runs to its end without an error."""
    namespace: dict[str, object] = {"__name__": "docs_example"}
    exec(compile(code, f"{document}:{line}", "exec"), namespace)


def test_examples_are_found_in_every_policy_page() -> None:
    """Each policy page has at least one tested example, so a broken parser cannot pass."""
    tested = {document for document, _, _ in (case.values for case in CASES)}
    policies = sorted((ROOT / "docs" / "policies").glob("*.md"))
    assert policies
    for page in policies:
        assert page.relative_to(ROOT).as_posix() in tested, page.name
    assert "README.md" in tested


def test_no_test_marker_skips_only_the_next_block() -> None:
    """The marker skips the block right after it, and a fence in another language hides none."""
    text = "\n".join(
        [
            "```python",
            "a = 1",
            "```",
            "",
            NO_TEST,
            "",
            "```python",
            "needs_a_server()",
            "```",
            "````markdown",
            "```python",
            "shown_not_run()",
            "```",
            "````",
            "```python",
            "b = 2",
            "```",
        ]
    )
    assert collect_blocks(text) == [
        (1, "a = 1\n", False),
        (7, "needs_a_server()\n", True),
        (15, "b = 2\n", False),
    ]


def test_needs_marker_names_the_servers_of_the_next_block() -> None:
    text = "\n".join(["<!-- needs: redis postgres -->", "", "```python", "x = 1", "```"])
    assert needs(text) == {3: frozenset({"redis", "postgres"})}
    assert collect_blocks(text) == [(3, "x = 1\n", False)]
