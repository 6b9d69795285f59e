"""Sphinx extension: render the ``helpers`` docstrings, written as plain text, as warning-free reST.

The docstrings are read in terminals and notebooks (``help()``, ``?``) first, so they use plain-text layout: formulas
aligned in indented lines, lists that start right after a sentence, ``|A ∩ B|`` set sizes, ``1×``tile`` products,
underlined headings. reST reads several of these as markup (substitutions, emphasis, block quotes, definition lists)
and warns. Rather than silence docutils, this hook (``autodoc-process-docstring``) rewrites each docstring:

- an indented paragraph, or one whose lines are not all indented alike, is a plain-text layout (a formula, a table,
  a code example): it becomes a literal block, shown as written (its ``literal`` markers and :role:`x` wrappers
  removed, since a literal block would print them), where reST would join its lines or warn;
- a list that starts or ends without a blank line gets one, and its items' continuation lines are aligned;
- an underlined heading becomes a rubric (a heading inside an API entry would break the page's section levels);
- outside inline literals, ``|`` and unpaired ``*`` are escaped, and inline literals glued to letters or symbols
  get the reST escape ``\\ `` (character-level inline markup) so that they still start and end; a literal that
  begins or ends with a space (which reST cannot write) shows that space as ``␣``.

Paragraphs after a ``::`` line, directives and doctest blocks are left alone: they are already reST.
"""
from __future__ import annotations

import re
import unicodedata

BULLET_RE = re.compile(r"^(\s*)(?:[-*+•]|\d+[.)])\s+(?=\S)")
UNDERLINE_RE = re.compile(r"^\s*([-=~^\"'`#*+])\1{2,}\s*$")
LITERAL_RE = re.compile(r"``.+?``")
ROLE_RE = re.compile(r":[a-z]+(?::[a-z]+)?:`~?([^`]+)`")
STRONG_OR_EM_RE = re.compile(r"(?<![\w*\\])(\*\*?)(?=\S)[^*]+?(?<=\S)\1(?![\w*])")

# docutils' rules for where inline markup may start and end (docutils.parsers.rst.states.Inliner).
_OPEN_BEFORE = set("'\"<([{")
_CLOSE_AFTER = set("'\")]}>")


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def _may_precede_start(ch: str) -> bool:
    return ch.isspace() or ch in _OPEN_BEFORE or unicodedata.category(ch) in ("Ps", "Pi", "Pf", "Pd", "Po")


def _may_follow_end(ch: str) -> bool:
    return ch.isspace() or ch in _CLOSE_AFTER or unicodedata.category(ch) in ("Pe", "Pi", "Pf", "Pd", "Po")


def _fix_text(text: str) -> str:
    """Escape ``|`` and unpaired ``*`` in text that holds no inline literal."""
    text = text.replace("|", r"\|")
    keep = [m.span() for m in STRONG_OR_EM_RE.finditer(text)]
    return "".join("\\*" if ch == "*" and not any(a <= i < b for a, b in keep) else ch for i, ch in enumerate(text))


def fix_inline(line: str) -> str:
    """One line of prose: escapes outside inline literals, and ``\\ `` where a literal touches a letter/symbol."""
    out, pos = [], 0
    for m in LITERAL_RE.finditer(line):
        out.append(_fix_text(line[pos:m.start()]))
        if m.start() > 0 and not _may_precede_start(line[m.start() - 1]):
            out.append("\\ ")
        inner = m.group(0)[2:-2]
        # reST cannot start or end a literal with a space; show a significant space as ␣ (`` verdict`` → ``␣verdict``).
        stripped = inner.strip(" ")
        inner = "␣" * (len(inner) - len(inner.lstrip(" "))) + stripped + "␣" * (len(inner) - len(inner.rstrip(" ")))
        out.append(f"``{inner}``")
        if m.end() < len(line) and not _may_follow_end(line[m.end()]):
            out.append("\\ ")
        pos = m.end()
    out.append(_fix_text(line[pos:]))
    return "".join(out)


def _literal_block(lines: list[str]) -> list[str]:
    """Plain-text layout shown as written: a literal block (``::`` alone prints nothing)."""
    body = [ROLE_RE.sub(r"\1", LITERAL_RE.sub(lambda m: m.group(0)[2:-2], line)) for line in lines]
    return ["::", ""] + ["    " + line for line in body] + [""]


def _prose(lines: list[str]) -> list[str]:
    """A run of lines with no list: reST as it stands if flush and evenly indented, else a literal block.

    An indented run is a formula or code laid out by hand: as a reST block quote its lines would be joined into
    one paragraph and its column alignment lost, so it is shown as written.
    """
    if len({_indent(line) for line in lines}) > 1 or _indent(lines[0]) > 0:
        return _literal_block(lines)
    return [fix_inline(line) for line in lines] + [""]


def _paragraph(lines: list[str]) -> list[str]:
    """Rewrite one paragraph (a run of non-blank lines); the result ends with a blank line."""
    if len(lines) >= 2 and UNDERLINE_RE.match(lines[1]) and not UNDERLINE_RE.match(lines[0]):
        return [f".. rubric:: {fix_inline(lines[0].strip())}", ""] + (_paragraph(lines[2:]) if lines[2:] else [])
    out: list[str] = []
    prose: list[str] = []
    item_col = None  # text column of the current list item, None outside a list
    bullet_indent = 0
    for line in lines:
        bullet = BULLET_RE.match(line)
        if bullet:
            if prose:
                out += _prose(prose)
                prose = []
            elif item_col is None and out and out[-1] != "":
                out.append("")
            item_col, bullet_indent = bullet.end(), _indent(line)
            out.append(line[:bullet.end()] + fix_inline(line[bullet.end():]))
        elif item_col is not None and _indent(line) > bullet_indent:
            out.append(" " * item_col + fix_inline(line.strip()))  # continuation of the item, aligned to its text
        else:
            if item_col is not None:
                out.append("")  # the list ends: reST needs a blank line before the text that follows
                item_col = None
            prose.append(line)
    if prose:
        out += _prose(prose)
    if out and out[-1] != "":
        out.append("")
    return out


def normalise(lines: list[str]) -> list[str]:
    """The whole docstring (lines, as autodoc gives them) rewritten; see the module docstring."""
    paragraphs: list[list[str]] = []
    current: list[str] = []
    for line in lines:
        if line.strip():
            current.append(line)
        elif current:
            paragraphs.append(current)
            current = []
    if current:
        paragraphs.append(current)

    out: list[str] = []
    verbatim_indent = None  # inside the indented body of a '::' block or a directive: copy as is
    for para in paragraphs:
        first = para[0]
        if verbatim_indent is not None and _indent(first) > verbatim_indent:
            out += para + [""]
            continue
        verbatim_indent = None
        if first.lstrip().startswith((">>>", ".. ")):
            out += para + [""]
            if first.lstrip().startswith(".. "):
                verbatim_indent = _indent(first)
            continue
        if para[-1].rstrip().endswith("::"):
            # The text before a literal block: fix its inline markup, keep the '::' and the block after it.
            out += [fix_inline(line) for line in para] + [""]
            verbatim_indent = min(_indent(line) for line in para)
            continue
        out += _paragraph(para)
    while out and out[-1] == "":
        out.pop()
    return out


def _process(app, what, name, obj, options, lines):
    lines[:] = normalise(lines)


def setup(app):
    app.connect("autodoc-process-docstring", _process)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
