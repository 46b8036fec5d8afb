"""mimetic: turn your own writing into a small language model that writes in your voice.

The Python API mirrors the pipeline, one function and one config object per stage::

    import mimetic
    ws = mimetic.Workspace.open("voices/me")
    mimetic.ingest(["~/my-writing"], ws)                      # IngestConfig
    mimetic.prepare(ws)                                       # PrepareConfig
    result = mimetic.train(ws)                                # TrainConfig
    mimetic.write(ws, "The morning after the storm")          # GenerateConfig
    mimetic.compare(ws, mimetic.held_out_prompts(ws))
    # with briefs: mimetic.prepare(ws, mimetic.PrepareConfig(format="mixed")), then
    # mimetic.write(ws, "a storm over a harbour town", mode="write"); mimetic.rewrite(ws, draft)
    mimetic.evaluate(ws, references="~/reference-authors")   # EvaluateConfig
    mimetic.export(ws)                                        # ExportConfig

Heavy libraries (torch, transformers) are imported only when a stage needs them.
"""

from mimetic.core.config import (EvaluateConfig, ExportConfig, GenerateConfig, IngestConfig, PolishConfig, PrepareConfig, TrainConfig,
                     VoiceConfig, default_learning_rate)
from mimetic.errors import MimeticError, TrainingInterrupted
from mimetic.evaluation.evaluate import evaluate
from mimetic.voice.export import export
from mimetic.voice.generate import Voice, compare, held_out_prompts, mode_prompts, read_prompts, rewrite, write
from mimetic.corpus.ingest import ingest
from mimetic.pipeline import make_voice
from mimetic.training.preference import polish
from mimetic.corpus.prepare import prepare
from mimetic.training.sft import train
from mimetic.core.workspace import Workspace

__version__ = "0.1.0"

__all__ = [
    "EvaluateConfig",
    "evaluate",
    "ExportConfig",
    "export",
    "GenerateConfig",
    "IngestConfig",
    "PolishConfig",
    "PrepareConfig",
    "TrainConfig",
    "VoiceConfig",
    "default_learning_rate",
    "MimeticError",
    "TrainingInterrupted",
    "Voice",
    "Workspace",
    "compare",
    "held_out_prompts",
    "ingest",
    "make_voice",
    "polish",
    "prepare",
    "read_prompts",
    "rewrite",
    "mode_prompts",
    "train",
    "write",
]
