"""Markdown as the words a reader hears: markup gone, one paragraph per block.

markdown-it-py (CommonMark, with tables and strikethrough) parses the text, so emphasis, links,
escapes and entities come out exactly as a renderer would show them. Kept: the text of
headings, paragraphs, list items, quotes and table rows (cells joined by commas), link text,
inline code. Dropped: code blocks and raw HTML blocks (read aloud they are noise), images,
HTML tags, bare URLs. Headings, list items and table rows end with a period when they have no
punctuation of their own, so that a voice pauses after them as a reader's eye does.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import PurePath

from markdown_it import MarkdownIt
from markdown_it.token import Token

SUFFIXES = frozenset({".md", ".markdown", ".mdown", ".mkd", ".mkdn"})
MEDIA_TYPES = frozenset({"text/markdown", "text/x-markdown"})
_PARSER = MarkdownIt("commonmark").enable(["table", "strikethrough"])
_BLOCK_ENDS = frozenset({"paragraph_close", "heading_close", "tr_close"})


def is_markdown(name: str, media_type: str) -> bool:
    """Markdown by its name or its sniffed type (libmagic mostly says text/plain for it)."""
    return PurePath(name).suffix.lower() in SUFFIXES or media_type in MEDIA_TYPES


def from_markdown(text: str) -> str:
    """The spoken text of a Markdown document: blocks separated by blank lines."""
    blocks: list[str] = []
    parts: list[str] = []  # the inline texts of the current block (the cells of a table row)
    items = 0  # depth of list items around the current block
    for token in _PARSER.parse(text):
        if token.type == "list_item_open":
            items += 1
        elif token.type == "list_item_close":
            items -= 1
        elif token.type == "inline":
            parts.append(_inline(token.children or []))
        elif token.type in _BLOCK_ENDS:
            block = ", ".join(p for p in parts if p)
            parts = []
            if block:
                ends_a_line = token.type != "paragraph_close" or items > 0
                blocks.append(block + "." if ends_a_line and block[-1].isalnum() else block)
    return "".join(f"{b}\n\n" for b in blocks)


def _inline(children: Sequence[Token]) -> str:
    """The visible text of a run of inline tokens, on one line."""
    out: list[str] = []
    autolink = False
    for child in children:
        if child.type == "link_open" and child.markup == "autolink":
            autolink = True  # <https://...>: a URL, not words
        elif child.type == "link_close":
            autolink = False
        elif autolink:
            continue
        elif child.type in ("text", "code_inline"):
            out.append(child.content)
        elif child.type in ("softbreak", "hardbreak"):
            out.append(" ")
    return re.sub(r"\s+", " ", "".join(out)).strip()
