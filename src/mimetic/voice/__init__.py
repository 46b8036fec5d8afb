"""Using a voice: ``generate`` (write, rewrite, compare, the log) and ``export`` (adapter, merged
model, GGUF, Ollama)."""
