"""Reading and measuring text: file formats (``readers``, ``markdown``), stylometry (Burrows' Delta,
most-frequent words), memorization audits, the identity probe and the searchable archive (SQLite FTS5).
Imports no machine-learning library."""
