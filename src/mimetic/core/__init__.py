"""The voice's files and settings: one config object per stage (``config``), typed records between
stages (``records``), events (``events``), the workspace and its lock (``workspace``), atomic writes
(``atomic``), the generation log (``logdb``), presets and selections. Imports no machine-learning library."""
