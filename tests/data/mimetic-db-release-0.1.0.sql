-- The generation log's schema exactly as the release before migrations created it
-- (workspace.py, executescript): the fixture of tests/test_logdb.py. Never edit.
CREATE TABLE IF NOT EXISTS generations (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    created_at TEXT NOT NULL,
    command TEXT NOT NULL,
    prompt TEXT NOT NULL,
    output TEXT NOT NULL,
    params TEXT NOT NULL,
    base_model TEXT NOT NULL,
    adapter TEXT,
    seed INTEGER,
    new_tokens INTEGER,
    duration_s REAL
);
