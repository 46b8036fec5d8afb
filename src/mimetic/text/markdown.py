"""Markdown (and Gemini text) to plain prose: front matter split off, markup removed.

Used by :mod:`mimetic.text.readers` for ``.md``/``.markdown``/``.gmi`` files; :mod:`mimetic.corpus.ingest`
re-exports :func:`split_front_matter` and :func:`clean_markdown` as part of its API.
Regular-expression cleaning, not a full CommonMark parser: the aim is the writer's words, not
a faithful rendering.
"""

from __future__ import annotations

import html
import re
from typing import Any

_FRONT_YAML = re.compile(r"\A---[ \t]*\n(.*?\n)?(?:---|\.\.\.)[ \t]*(?:\n|\Z)", re.DOTALL)
_FRONT_TOML = re.compile(r"\A\+\+\+[ \t]*\n(.*?\n)?\+\+\+[ \t]*(?:\n|\Z)", re.DOTALL)
_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})[^\n]*\n.*?(?:^ {0,3}\1[`~]*[ \t]*$|\Z)", re.DOTALL | re.MULTILINE)
_HTML_COMMENT = re.compile(r"<!--.*?-->", re.DOTALL)
_IMAGE = re.compile(r"!\[[^\]]*\]\([^)]*\)|!\[[^\]]*\]\[[^\]]*\]")
_LINK_INLINE = re.compile(r"\[([^\]]*)\]\((?:[^()\s]|\([^)]*\))*(?:\s+\"[^\"]*\")?\)")
_LINK_REF = re.compile(r"\[([^\]]+)\]\[[^\]]*\]")
_LINK_DEF = re.compile(r"^ {0,3}\[[^\]]+\]:\s*\S+.*$", re.MULTILINE)
_FOOTNOTE_REF = re.compile(r"\[\^[^\]]+\]")
_FOOTNOTE_DEF = re.compile(r"^\[\^[^\]]+\]:\s*", re.MULTILINE)
_AUTOLINK = re.compile(r"<(?:https?|ftp|mailto|gemini|gopher):[^>\s]*>", re.IGNORECASE)
_URL = re.compile(r"\b(?:https?|ftp|gemini|gopher)://[^\s<>()\]\"']+", re.IGNORECASE)
_GMI_LINK = re.compile(r"^=>[^\n]*$", re.MULTILINE)
_HTML_TAG = re.compile(r"</?[A-Za-z][^<>]*>")
_LIQUID = re.compile(r"\{%.*?%\}|\{\{.*?\}\}", re.DOTALL)
_HEADING = re.compile(r"^ {0,3}#{1,6}\s+(.*?)\s*#*\s*$", re.MULTILINE)
_SETEXT = re.compile(r"^ {0,3}(?:=+|-+)\s*$", re.MULTILINE)
# Kramdown inline attribute lists ("{:.table}", "{: #id}") and Pandoc/Kramdown attributes at
# the end of a heading or block ("## Title {#title .class}"): markup, not prose
_ATTRIBUTES = re.compile(r"\{:[^}\n]*\}|[ \t]*\{[#.][\w-][^}\n]*\}[ \t]*$", re.MULTILINE)
_HR = re.compile(r"^ {0,3}(?:[-*_]\s*){3,}$", re.MULTILINE)
_LIST = re.compile(r"^\s{0,6}(?:[-*+]|\d{1,3}[.)])\s+", re.MULTILINE)
_EMPH = re.compile(r"(\*{1,3}|_{1,3})(?=\S)(.+?)(?<=\S)\1")
_STRIKE = re.compile(r"~~(.+?)~~")
_CODE_SPAN = re.compile(r"`+([^`\n]*)`+")
_TABLE_ROW = re.compile(r"^\s*\|.*\|\s*$|^\s*\|?\s*:?-{3,}:?\s*(?:\|\s*:?-{3,}:?\s*)+\|?\s*$", re.MULTILINE)


def split_front_matter(text: str) -> tuple[dict[str, Any], str]:
    """Split YAML (``---``) or TOML (``+++``) front matter from a Markdown document.

    Returns the parsed metadata (``{}`` if none or unparsable) and the body.
    """
    import tomllib

    import yaml

    m = _FRONT_YAML.match(text)
    if m:
        try:
            meta = yaml.safe_load(m.group(1) or "") or {}
        except (yaml.YAMLError, ValueError, TypeError):  # e.g. "date: 2020-02-31"
            meta = {}
        return (meta if isinstance(meta, dict) else {}), text[m.end() :]
    m = _FRONT_TOML.match(text)
    if m:
        try:
            meta = tomllib.loads(m.group(1) or "")
        except tomllib.TOMLDecodeError:
            meta = {}
        return meta, text[m.end() :]
    return {}, text


def _drop_indented_code(text: str) -> str:
    """Remove indented code blocks: lines indented 4+ spaces (or a tab) after a blank line."""
    out, in_code, prev_blank = [], False, True
    for line in text.split("\n"):
        indented = line.startswith(("    ", "\t")) and line.strip()
        listy = _LIST.match(line.lstrip())
        if indented and (in_code or prev_blank) and not listy:
            in_code = True
            continue
        if in_code and not line.strip():
            prev_blank = True
            continue
        in_code = False
        out.append(line)
        prev_blank = not line.strip()
    return "\n".join(out)


_HTML_BLOCK = re.compile(
    r"\s*<(?:div|figure|table|script|style|iframe|video|audio|pre|center|img|details|svg|form|object|embed|noscript)\b",
    re.IGNORECASE,
)


def _drop_html_blocks(text: str) -> str:
    """Drop paragraphs that open with a block-level HTML element (figures, embeds, tables)."""
    return "\n\n".join(b for b in re.split(r"\n\s*\n", text) if not _HTML_BLOCK.match(b))


def clean_markdown(text: str, remove_blockquotes: bool = True) -> str:
    """Markdown (or Gemini text) to plain prose, keeping the writer's words only.

    Removes code blocks (fenced and indented), tables, HTML blocks and tags, Liquid/Jinja
    tags, Kramdown/Pandoc attribute lists, images, link targets (link text is kept), Gemini link lines, link reference definitions, footnote
    markers, bare URLs, heading/list/emphasis marks, horizontal rules and, optionally,
    block quotations. HTML entities are decoded. Front matter must be split off first.
    """
    text = _HTML_COMMENT.sub("", text)
    text = _FENCE.sub("", text)
    text = _drop_indented_code(text)
    text = _LIQUID.sub("", text)
    text = _ATTRIBUTES.sub("", text)
    text = _drop_html_blocks(text)
    text = _TABLE_ROW.sub("", text)
    if remove_blockquotes:
        text = re.sub(r"^ {0,3}>.*$", "", text, flags=re.MULTILINE)
    else:
        text = re.sub(r"^ {0,3}>\s?", "", text, flags=re.MULTILINE)
    text = _GMI_LINK.sub("", text)  # Gemini link lines are labels on their own line, not prose
    text = _AUTOLINK.sub("", text)
    text = _HTML_TAG.sub("", text)  # before links: inline HTML can sit inside link syntax
    text = _IMAGE.sub("", text)
    text = _LINK_INLINE.sub(lambda m: m.group(1), text)
    text = _LINK_REF.sub(lambda m: m.group(1), text)
    text = _FOOTNOTE_DEF.sub("", text)  # before link definitions, which look alike
    text = _LINK_DEF.sub("", text)
    text = _FOOTNOTE_REF.sub("", text)
    text = _URL.sub("", text)
    text = _HEADING.sub(lambda m: "\n" + m.group(1) + "\n", text)
    text = _HR.sub("", text)
    text = _SETEXT.sub("", text)
    text = _LIST.sub("\n", text)
    text = _STRIKE.sub(r"\1", text)
    text = _CODE_SPAN.sub(r"\1", text)
    for _ in range(2):
        text = _EMPH.sub(r"\2", text)
    text = html.unescape(text)
    return text
