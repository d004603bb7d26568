"""Every file the docs link to or name exists in the repository.

The documents: the Markdown files at the top of the repository (README.md, CHANGELOG.md),
every page under docs/ and every README.md under examples/. In each, outside fenced code
blocks and HTML comments:

- A relative link, ``[text](path)``, ``[text](path#anchor)``, ``![alt](path)``, a link
  reference definition ``[id]: path`` or an HTML ``href=`` / ``src=``, names a file or folder
  that exists, relative to the document's folder (mkdocs' rule for a page). A docs page
  may not link outside docs/ (mkdocs publishes only docs/), and its ``page.md#anchor``
  must name a heading (or an explicit id) of that page. Absolute URLs (``http:``,
  ``mailto:``...), anchors alone (``#x``) and mkdocstrings cross-references
  (``[Name][failsafe.x]``, not parenthesised) are not checked.
- A path in backticks that starts with one of the repository's top-level folders
  (``src/``, ``tests/``, ``docs/``, ``examples/``, ``bench/``, ``scripts/``, ``.ci/``), such
  as ``tests/errors/test_service_process.py``, exists from the repository's root; one that
  starts with a folder beside the document (``warehouse_flow/README.md`` in
  examples/README.md) exists from there. A bare ``NAME.md`` in backticks exists beside the
  document, at the root, or in docs/; a bare ``Makefile``, ``pyproject.toml`` or
  ``mkdocs.yml`` exists at the root. Anything with a space, a glob or a placeholder
  (``*.md``, ``examples/<name>``) is not a path, and a name without a folder that is not
  one of those (``errors.db``, ``settings.json``) is a file the user's run creates, so is
  left alone.
- A ``--8<-- "file"`` snippet (pymdownx.snippets) names a file that exists from the root.

Each failure names the document, the line and the missing target.
"""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path
from urllib.parse import unquote

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"

TOP_FOLDERS = frozenset({"src", "tests", "docs", "examples", "bench", "scripts", ".ci"})
ROOT_FILES = frozenset({"Makefile", "pyproject.toml", "mkdocs.yml"})

_FENCE = re.compile(r"^[ \t]*(?P<fence>`{3,}|~{3,})")
_COMMENT = re.compile(r"<!--.*?-->", re.DOTALL)
_CODE_SPAN = re.compile(r"(?<!`)(?P<ticks>`+)(?!`)(?P<code>.+?)(?<!`)(?P=ticks)(?!`)", re.DOTALL)
_LINK = re.compile(
    r"\[(?:[^\[\]]|\[[^\[\]]*\])*\]"  # the text, one level of brackets inside allowed
    r"\(\s*(?P<target><[^>\n]*>|[^)\s]+)"  # the target, bare or in angle brackets
    r"""(?:\s+(?:"[^"]*"|'[^']*'|\([^)]*\)))?\s*\)"""  # an optional title
)
_REFERENCE = re.compile(r"^[ ]{0,3}\[[^\]]+\]:[ \t]*(?P<target><[^>\n]*>|\S+)", re.MULTILINE)
_HTML = re.compile(r"""\b(?:href|src)\s*=\s*(?P<q>["'])(?P<target>.*?)(?P=q)""")
_SNIPPET = re.compile(r"""^[ \t]*--8<--[ \t]+(?P<q>["'])(?P<target>[^"']+)(?P=q)""", re.MULTILINE)
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")
_BARE_MD = re.compile(r"^[\w.-]+\.md$")
_NOT_A_PATH = re.compile(r"[\s*?\[\]{}<>|$=,;\"'()!]")
_HEADING = re.compile(r"^[ ]{0,3}(?P<hashes>#{1,6})[ \t]+(?P<text>.*?)(?:[ \t]+#+)?[ \t]*$")
_ATTR_ID = re.compile(r"[ \t]*\{:?[^}]*#(?P<id>[\w.:-]+)[^}]*\}[ \t]*$")
_HTML_ID = re.compile(r"""\b(?:id|name)\s*=\s*["'](?P<id>[^"']+)["']""")


def _documents() -> list[Path]:
    docs = sorted(DOCS.rglob("*.md"))
    examples = sorted((ROOT / "examples").rglob("README.md"))
    return [*sorted(ROOT.glob("*.md")), *docs, *examples]


def _blank(text: str, pattern: re.Pattern[str]) -> str:
    """``text`` with each match of ``pattern`` turned into spaces (newlines kept)."""
    return pattern.sub(lambda m: re.sub(r"[^\n]", " ", m.group(0)), text)


def _without_fences(text: str) -> str:
    """``text`` with every fenced code block blanked out, its lines kept (so line numbers hold)."""
    out: list[str] = []
    fence = ""
    for line in text.split("\n"):
        if not fence:
            opening = _FENCE.match(line)
            if opening is not None:
                fence = opening["fence"]
                out.append("")
            else:
                out.append(line)
            continue
        stripped = line.strip()
        if stripped.startswith(fence) and not stripped.strip(fence[0]):
            fence = ""
        out.append("")
    return "\n".join(out)


def _prose(text: str) -> str:
    """The document's text outside fenced code blocks and HTML comments."""
    return _blank(_without_fences(text), _COMMENT)


def _line(text: str, offset: int) -> int:
    return text.count("\n", 0, offset) + 1


def _slugify(value: str) -> str:
    """Python-Markdown's toc slug (what mkdocs makes a heading's id)."""
    value = unicodedata.normalize("NFKD", value).encode("ascii", "ignore").decode("ascii")
    value = re.sub(r"[^\w\s-]", "", value).strip().lower()
    return re.sub(r"[-\s]+", "-", value)


def _heading_text(markdown: str) -> str:
    """A heading's text as rendered, without its Markdown (code, links, emphasis)."""
    text = re.sub(r"(`+)(.+?)\1", lambda m: m.group(2).strip(), markdown)
    text = re.sub(r"!?\[([^\]]*)\](?:\([^)]*\)|\[[^\]]*\])", r"\1", text)
    text = re.sub(r"(\*{1,3}|(?<!\w)_{1,3})(.+?)\1", r"\2", text)
    text = re.sub(r"<[^>]+>", "", text)
    return text.replace("&amp;", "&")


def _anchors(page: Path) -> set[str] | None:
    """The ids a docs page's headings get; ``None`` if mkdocstrings adds its own."""
    text = page.read_text(encoding="utf-8")
    if re.search(r"^:::", text, re.MULTILINE):
        return None  # an API page: mkdocstrings makes an id per object
    prose = _prose(text)
    ids: set[str] = {m["id"] for m in _HTML_ID.finditer(prose)}
    seen: set[str] = set()
    lines = prose.split("\n")
    for i, line in enumerate(lines):
        heading = _HEADING.match(line)
        text_of_heading = None
        if heading is not None:
            text_of_heading = heading["text"]
        elif (
            i + 1 < len(lines)
            and line.strip()
            and re.match(r"^[ ]{0,3}(=+|-+)[ \t]*$", lines[i + 1])
            and not re.match(r"^[ ]{0,3}([-*+]|\d+\.)[ \t]", line)
        ):
            text_of_heading = line.strip()
        if text_of_heading is None:
            continue
        explicit = _ATTR_ID.search(text_of_heading)
        if explicit is not None:
            ids.add(explicit["id"])
            continue
        slug = _slugify(_heading_text(text_of_heading))
        unique, n = slug, 0
        while unique in seen:
            n += 1
            unique = f"{slug}_{n}"
        seen.add(unique)
        ids.add(unique)
    return ids


def _check_link(document: Path, target: str) -> str | None:
    """Why ``target``, linked from ``document``, is broken; ``None`` if it is fine."""
    target = target.strip()
    if target.startswith("<") and target.endswith(">"):
        target = target[1:-1].strip()
    if not target or target.startswith("#") or _SCHEME.match(target):
        return None
    path_part, _, anchor = target.partition("#")
    path_part = unquote(path_part.partition("?")[0])
    if not path_part:
        return None
    base = ROOT if path_part.startswith("/") else document.parent
    resolved = (base / path_part.lstrip("/")).resolve()
    if not resolved.exists():
        return f"links to {target!r}, and {_shown(resolved)} does not exist"
    in_docs = document.is_relative_to(DOCS)
    if in_docs and not resolved.is_relative_to(DOCS):
        return f"links to {target!r}, outside docs/: mkdocs does not publish {_shown(resolved)}"
    if in_docs and anchor and resolved.is_file() and resolved.suffix == ".md":
        anchors = _anchors(resolved)
        if anchors is not None and anchor not in anchors:
            return f"links to {target!r}, and {_shown(resolved)} has no heading #{anchor}"
    return None


def _check_named(document: Path, code: str) -> str | None:
    """Why the path ``code``, named in backticks in ``document``, is missing; ``None`` if not."""
    name = " ".join(code.split())
    name = re.sub(r"::.*$", "", name)  # tests/x.py::test_name
    name = re.sub(r":\d+(?::\d+)?$", "", name)  # src/x.py:12
    if not name or _NOT_A_PATH.search(name) or name.startswith(("-", "~")):
        return None
    parts = name.rstrip("/").split("/")
    if "..." in parts or "…" in name:
        return None  # a placeholder, such as bench/...
    candidates: list[Path]
    if len(parts) > 1 and parts[0] in TOP_FOLDERS:
        candidates = [ROOT / name]
    elif len(parts) > 1 and parts[0] and (document.parent / parts[0]).is_dir():
        candidates = [document.parent / name]
    elif len(parts) == 1 and _BARE_MD.match(name):
        candidates = [document.parent / name, ROOT / name, DOCS / name]
    elif len(parts) == 1 and name in ROOT_FILES:
        candidates = [ROOT / name]
    else:
        return None
    if any(candidate.exists() for candidate in candidates):
        return None
    return f"names `{code}`, which is not in the repository"


def _shown(path: Path) -> str:
    return path.relative_to(ROOT).as_posix() if path.is_relative_to(ROOT) else str(path)


def problems(document: Path, text: str | None = None) -> list[str]:
    """Every broken link and missing named file of ``document``, as ``FILE:LINE: why``.

    ``text``: the document's text, if not read from ``document`` (which then need not exist).
    """
    if text is None:
        text = document.read_text(encoding="utf-8")
    prose = _prose(text)
    found: list[tuple[int, str]] = []  # (offset, why): in the document's order
    for span in _CODE_SPAN.finditer(prose):
        why = _check_named(document, span["code"].strip())
        if why is not None:
            found.append((span.start(), why))
    linkable = _blank(prose, _CODE_SPAN)  # a link shown in backticks is not a link
    for pattern in (_LINK, _REFERENCE, _HTML):
        for match in pattern.finditer(linkable):
            why = _check_link(document, match["target"])
            if why is not None:
                found.append((match.start("target"), why))
    for match in _SNIPPET.finditer(prose):
        if not (ROOT / match["target"]).exists():
            found.append((match.start(), f"includes {match['target']!r}, missing"))
    where = _shown(document)
    return [f"{where}:{_line(prose, offset)}: {why}" for offset, why in sorted(found)]


@pytest.mark.parametrize("document", _documents(), ids=_shown)
def test_every_link_and_named_file_exists(document: Path) -> None:
    found = problems(document)
    assert not found, "missing targets:\n" + "\n".join(found)


def test_the_checks_catch_what_they_are_for() -> None:
    """A document naming a missing file fails; URLs, globs and files a run makes do not."""
    text = "\n".join(
        [
            "See `STYLE.md` and `tests/no_such_test.py`, and [the guide](no-such-page.md).",
            "Fine: `errors.db`, `docs/**/*.md`, `examples/<name>`, `bench/...`, `Makefile`,",
            "[home](https://example.org/x.md), [here](#top), [`Retry`][failsafe.Retry],",
            "`tests/test_docs_links.py::test_the_checks_catch_what_they_are_for`,",
            "[http](http.md#options), [up](../README.md), [bad](http.md#no-such-heading).",
            "```",
            "`STYLE_IN_CODE.md` [code](nowhere.md)",
            "```",
            "<!-- [comment](nowhere.md) -->",
        ]
    )
    found = problems(DOCS / "probe.md", text)  # as if it were a page of docs/
    assert found == [
        "docs/probe.md:1: names `STYLE.md`, which is not in the repository",
        "docs/probe.md:1: names `tests/no_such_test.py`, which is not in the repository",
        "docs/probe.md:1: links to 'no-such-page.md', and docs/no-such-page.md does not exist",
        "docs/probe.md:5: links to '../README.md', outside docs/: mkdocs does not publish"
        " README.md",
        "docs/probe.md:5: links to 'http.md#no-such-heading', and docs/http.md has no heading"
        " #no-such-heading",
    ]
