"""From the writer's folders to training examples: ``ingest`` (clean with provenance, never touching
the originals), ``prepare`` (examples with a held-out split) and ``briefs`` (back-translated prompts)."""
