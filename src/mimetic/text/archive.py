"""The living archive: full-text search over the writer's own cleaned writing, with provenance.

``corpus/archive.db`` is a SQLite database built by ingest inside the same atomic folder swap as
the corpus (so the archive always describes the corpus beside it): one row per paragraph of
every kept document, with its file, title, date and paragraph number, and an FTS5 index of the
text (SQLite's full-text search: Porter stemming, Unicode case and diacritic folding) ranked by
BM25 (Robertson & Zaragoza 2009, "The Probabilistic Relevance Framework: BM25 and Beyond";
SQLite's ``bm25()``: lower is better).

:func:`search` answers a query typed by a person (its words must all occur; when no paragraph
has them all, any of them will do); :func:`nearest` finds the writer's paragraphs nearest to a
generated passage ("where does this come from?"), from the passage's rarest words.
"""

from __future__ import annotations

import re
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from mimetic.errors import MimeticError

ARCHIVE = "archive.db"
_WORD = re.compile(r"\w+", re.UNICODE)
_SCHEMA = """
CREATE TABLE passages (
    id INTEGER PRIMARY KEY,
    doc_id TEXT NOT NULL,
    path TEXT NOT NULL,
    title TEXT,
    date TEXT,
    paragraph INTEGER NOT NULL,
    text TEXT NOT NULL
);
CREATE VIRTUAL TABLE passages_fts USING fts5(
    text, content='passages', content_rowid='id', tokenize='porter unicode61 remove_diacritics 2'
);
"""


@dataclass(frozen=True)
class Hit:
    """One paragraph of the writer's archive that answers a query.

    Attributes:
        doc_id, path, title, date: the document it is from (``path`` as ingest read it).
        paragraph: its number in the cleaned document, from 1.
        text: the whole paragraph.
        snippet: the paragraph around the matched words, matches in ``[brackets]``.
        score: BM25 relevance (higher is better; SQLite's ``bm25()`` negated).
    """

    doc_id: str
    path: str
    title: str | None
    date: str | None
    paragraph: int
    text: str
    snippet: str
    score: float

    def where(self) -> str:
        """Provenance in one line: ``file (date), paragraph n``."""
        name = self.title or Path(self.path).name
        return f"{name}{f' ({self.date})' if self.date else ''}, paragraph {self.paragraph}"


def build(path: Path, documents: Iterable[dict[str, Any]]) -> int:
    """Write a new archive at ``path`` (which must not exist yet) from ``documents``; returns the
    number of paragraphs indexed.

    Args:
        path: the database file to create (ingest gives one inside its temporary corpus folder).
        documents: dicts with ``doc_id``, ``path``, ``title``, ``date`` and ``paragraphs`` (a
            list of strings), as :func:`mimetic.corpus.ingest.load_corpus` returns them.
    """
    con = sqlite3.connect(path)
    try:
        with con:
            con.executescript(_SCHEMA)
            rows = ((d["doc_id"], d["path"], d.get("title"), d.get("date"), k + 1, p)
                    for d in documents for k, p in enumerate(d["paragraphs"]))
            con.executemany("INSERT INTO passages (doc_id, path, title, date, paragraph, text) VALUES (?, ?, ?, ?, ?, ?)", rows)
            con.execute("INSERT INTO passages_fts (passages_fts) VALUES ('rebuild')")
            con.execute("INSERT INTO passages_fts (passages_fts) VALUES ('optimize')")
        return con.execute("SELECT count(*) FROM passages").fetchone()[0]
    finally:
        con.close()


def _open(corpus_dir: Path) -> sqlite3.Connection:
    db = corpus_dir / ARCHIVE
    if not db.exists():
        raise MimeticError(
            "This voice has no archive to search yet (it was ingested by an earlier mimetic, or not at all).",
            f"Ingest your writing again to build it: mimetic ingest PATH-TO-YOUR-WRITING --workspace {corpus_dir.parent}",
        )
    return sqlite3.connect(f"file:{db}?mode=ro", uri=True)


def _match(words: list[str], any_word: bool) -> str:
    """An FTS5 query from plain words: each quoted (so no word is read as FTS5 syntax), joined by
    AND (implicit) or OR."""
    quoted = ['"' + w.replace('"', '""') + '"' for w in words]
    return (" OR " if any_word else " ").join(quoted)


def _query(con: sqlite3.Connection, match: str, limit: int) -> list[Hit]:
    sql = """
        SELECT p.doc_id, p.path, p.title, p.date, p.paragraph, p.text,
               snippet(passages_fts, 0, '[', ']', '…', 24), bm25(passages_fts)
        FROM passages_fts JOIN passages p ON p.id = passages_fts.rowid
        WHERE passages_fts MATCH ? ORDER BY bm25(passages_fts) LIMIT ?"""
    return [Hit(*r[:7], score=-r[7]) for r in con.execute(sql, (match, limit))]


def search(corpus_dir: Path, query: str, limit: int = 10) -> tuple[list[Hit], float]:
    """The writer's paragraphs that best answer ``query``, best first, and the seconds it took.

    Every word of the query must occur (stemmed: "walking" finds "walked"); when no paragraph has
    them all, paragraphs with any of them are ranked instead.

    Args:
        corpus_dir: the voice's ``corpus/`` folder.
        query: words, as typed; punctuation and FTS5 operators are read as plain text.
        limit: most hits returned.

    Raises:
        MimeticError: no archive (ingested by an earlier version), or a query with no words.
    """
    words = _WORD.findall(query)
    if not words:
        raise MimeticError(f"Nothing to search for in {query!r}.", 'Give a word or a few: mimetic search "harbour wall"')
    t = time.perf_counter()
    con = _open(corpus_dir)
    try:
        hits = _query(con, _match(words, False), limit)
        if not hits and len(words) > 1:
            hits = _query(con, _match(words, True), limit)
    finally:
        con.close()
    return hits, time.perf_counter() - t


def nearest(corpus_dir: Path, text: str, limit: int = 3, words: int = 24) -> list[Hit]:
    """The writer's paragraphs nearest to a generated ``text``: BM25 over the ``words`` of the
    text that are rarest in the archive (its distinctive words; the commonest carry no sign of
    where a passage comes from), any of them matching.

    Raises:
        MimeticError: no archive.
    """
    found = list(dict.fromkeys(w.lower() for w in _WORD.findall(text) if len(w) > 2))
    if not found:
        return []
    con = _open(corpus_dir)
    try:
        rare = []
        for w in found:  # document frequency of each word from the index's own vocabulary
            row = con.execute("SELECT count(*) FROM passages_fts WHERE passages_fts MATCH ?", (_match([w], False),)).fetchone()
            if row[0]:
                rare.append((row[0], w))
        chosen = [w for _, w in sorted(rare)[:words]]
        return _query(con, _match(chosen, True), limit) if chosen else []
    finally:
        con.close()


__all__ = ["ARCHIVE", "Hit", "build", "search", "nearest"]
