"""Choosing part of the corpus for a version of the voice: ``--where "date < 2017"``.

A *selection* is a small filter over the documents of ``corpus/manifest.json``: clauses of the
form ``FIELD OP VALUE`` joined by ``and``. It is parsed here (never evaluated as code), applied to
the manifest's provenance (date, folder, file, format, tag, author), and gives the ``doc_id`` of
each selected document; the prepared examples carry their ``doc_id``, so a version trains on the
selected documents' training examples and is measured on their held-out ones (the held-out split
is the voice's, so no version ever trains on another version's held-out text).

Fields and operators:

=========  =====================================  =========================================
field      operators                              compares
=========  =====================================  =========================================
date       ``<  <=  >  >=  =  !=``                the document's date (front matter, e-mail
                                                  date or file date) cut to the value's
                                                  precision: ``date <= 2016`` keeps all of 2016
folder     ``=  !=``                              any folder of the source path
file       ``=  !=``                              the path, with shell wildcards (``*.md``)
format     ``=  !=``                              the reader (``markdown``, ``email``, ``pdf``…)
tag        ``=  !=``                              one of the document's tags
author     ``=  !=``                              the document's author
=========  =====================================  =========================================

Text values compare case-insensitively and may be quoted (``folder = "old essays"``).
"""

from __future__ import annotations

import fnmatch
import re
import shlex
from dataclasses import dataclass
from pathlib import PurePath
from typing import Any

from mimetic.errors import MimeticError

FIELDS = ("date", "folder", "file", "format", "tag", "author")
_ORDERED = ("<", "<=", ">", ">=")
_CLAUSE = re.compile(r"^\s*(\w+)\s*(<=|>=|!=|==|=|<|>)\s*(.+?)\s*$")
_DATE = re.compile(r"^\d{4}(-\d{2}(-\d{2})?)?$")
EXAMPLES = 'for example --where "date < 2017", "date >= 2014-06 and date < 2017", "folder = essays", "format = email"'


@dataclass(frozen=True)
class Clause:
    """One ``FIELD OP VALUE`` test."""

    field: str
    op: str
    value: str

    def test(self, doc: dict[str, Any]) -> bool:
        """Whether the manifest entry ``doc`` (a ``SourceFile`` as a dict) passes; a document with
        no date fails every date test."""
        if self.field == "date":
            date = (doc.get("date") or "")[: len(self.value)]
            if not date:
                return False
            return {"<": date < self.value, "<=": date <= self.value, ">": date > self.value,
                    ">=": date >= self.value, "=": date == self.value, "!=": date != self.value}[self.op]
        path = str(doc.get("path") or "").split("!", 1)[0]
        value = self.value.casefold()
        if self.field == "folder":
            hit = value in (p.casefold() for p in PurePath(path).parent.parts)
        elif self.field == "file":
            hit = fnmatch.fnmatch(path.casefold(), value if "/" in value else "*" + value) or \
                fnmatch.fnmatch(PurePath(path).name.casefold(), value)
        elif self.field == "tag":
            hit = value in (str(t).casefold() for t in doc.get("tags") or [])
        else:
            hit = str(doc.get(self.field) or "").casefold() == value
        return hit if self.op == "=" else not hit


@dataclass(frozen=True)
class Selection:
    """A parsed ``--where`` expression: every clause must hold (``and``). The empty expression
    selects everything."""

    expression: str
    clauses: tuple[Clause, ...]

    @property
    def everything(self) -> bool:
        return not self.clauses

    def documents(self, files: list[dict[str, Any]]) -> set[str]:
        """The ``doc_id`` of each kept document in ``files`` (``Manifest.files``) that passes."""
        return {f["doc_id"] for f in files if f.get("doc_id") and not f.get("skipped")
                and all(c.test(f) for c in self.clauses)}

    def describe(self, files: list[dict[str, Any]]) -> str:
        """One line: documents and words selected, and how many have no date when dates are tested."""
        docs = [f for f in files if f.get("doc_id") and not f.get("skipped")]
        chosen = self.documents(files)
        words = sum(int(f.get("words") or 0) for f in docs if f["doc_id"] in chosen)
        line = f"{len(chosen)} of {len(docs)} documents ({words:,} words)"
        if any(c.field == "date" for c in self.clauses):
            undated = sum(1 for f in docs if not f.get("date"))
            if undated:
                line += f"; {undated} without a date are left out"
        return line


def parse(expression: str | None) -> Selection:
    """Parse ``expression`` (``""`` or ``None``: everything).

    Raises:
        MimeticError: an unknown field, an operator the field does not take, a date that is not
            ``YYYY``, ``YYYY-MM`` or ``YYYY-MM-DD``, or a clause that is not ``FIELD OP VALUE``;
            the message shows the accepted forms.
    """
    expression = (expression or "").strip()
    clauses = []
    for part in re.split(r"\s+and\s+", expression, flags=re.IGNORECASE) if expression else []:
        m = _CLAUSE.match(part)
        if not m:
            raise MimeticError(f"Cannot read {part.strip()!r} in --where: each part is FIELD OP VALUE, joined by 'and'.",
                               EXAMPLES + ".")
        name, op, value = m.group(1).lower(), m.group(2).replace("==", "="), m.group(3)
        if name == "year":
            name = "date"
        if name not in FIELDS:
            raise MimeticError(f"--where cannot select by {name!r}.", f"Fields: {', '.join(FIELDS)}; " + EXAMPLES + ".")
        try:
            words = shlex.split(value)
        except ValueError:
            words = []
        if len(words) != 1:
            raise MimeticError(f"The value {value!r} in --where is not one word or one quoted text.",
                               'Quote values with spaces: folder = "old essays".')
        value = words[0]
        if name == "date" and not _DATE.match(value):
            raise MimeticError(f"{value!r} is not a date --where can compare.", "Write YYYY, YYYY-MM or YYYY-MM-DD: date < 2017-06.")
        if name != "date" and op in _ORDERED:
            raise MimeticError(f"{name} takes = or != in --where, not {op}.", EXAMPLES + ".")
        clauses.append(Clause(name, op, value))
    return Selection(expression, tuple(clauses))


__all__ = ["Clause", "Selection", "parse", "FIELDS"]
