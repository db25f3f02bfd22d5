"""Model output as safe Markdown: CommonMark with raw HTML off, and no links, images or reference definitions
(their text stays as typed), so nothing in a CoT can load, link or run anything; every character is escaped.

Formulas stay readable: `$...$`, `$$...$$`, `\\(...\\)` and `\\[...\\]` are kept verbatim (no emphasis or escape
processing inside them) in a `<span class="math">`; there is no TeX renderer (the app is offline, no script).
"""
from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from markdown_it import MarkdownIt
from markdown_it.common.utils import escapeHtml
from markdown_it.rules_inline import StateInline
from markdown_it.token import Token
from markupsafe import Markup

# $$...$$, \(...\), \[...\], and $...$ (not opened by a space, not closed by a space or before a digit: "$5 and $6")
_MATH = re.compile(r"\$\$.+?\$\$|\\\(.+?\\\)|\\\[.+?\\\]|\$(?=\S)[^$\n]*?(?<=\S)\$(?!\d)", re.S)


def _math(state: StateInline, silent: bool) -> bool:
    if state.src[state.pos] not in "$\\":
        return False
    m = _MATH.match(state.src, state.pos, state.posMax)
    if m is None:
        return False
    if not silent:
        state.push("math_inline", "", 0).content = m.group(0)
    state.pos = m.end()
    return True


def _render_math(self: Any, tokens: Sequence[Token], idx: int, options: Any, env: Any) -> str:
    return f'<span class="math">{escapeHtml(tokens[idx].content)}</span>'


def _parser() -> MarkdownIt:
    md = MarkdownIt("commonmark", {"html": False, "breaks": True})
    md.disable(["link", "image", "autolink", "html_inline", "html_block", "reference"])
    md.inline.ruler.before("escape", "math_inline", _math)
    md.add_render_rule("math_inline", _render_math)
    return md


_MD = _parser()


def markdown_html(text: str | None) -> Markup:
    """Safe HTML of untrusted Markdown (a Jinja filter: `{{ item.cot | markdown }}`)."""
    return Markup(_MD.render(text or ""))  # noqa: S704 (raw HTML is off: markdown-it escapes every character)
