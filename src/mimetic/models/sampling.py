"""Sampling settings, once, and their translation for each engine that runs a voice.

:class:`SamplingParams` holds the decoding settings of ``[generate]`` (:class:`GenerateConfig`)
and turns them into the keyword arguments of each engine:

* :meth:`SamplingParams.transformers_kwargs` for ``transformers``' ``model.generate``;
* :meth:`SamplingParams.llama_cpp_kwargs` for ``llama_cpp.Llama.create_completion``;
* :meth:`SamplingParams.modelfile_parameters` for the ``PARAMETER`` lines of an Ollama
  Modelfile (names from Ollama's ``docs/modelfile.md``: ``temperature``, ``top_p``, ``min_p``,
  ``repeat_penalty``, ``num_predict``).

The greedy rule, the same in every engine: **temperature 0 means greedy decoding** (the most
likely token at every step: no sampling, so top-p and min-p do nothing and are not passed),
**and the repetition penalty still applies**. The penalty (Keskar et al. 2019, "CTRL", §4.1:
the logit of every token already in the sequence is divided by the penalty when positive,
multiplied when negative) is a change to the logits, not a sampling step, and both llama.cpp
(its sampler chain applies penalties before the greedy pick) and Ollama (which writes
``repeat_penalty`` regardless of temperature) keep it under greedy decoding. Pure argmax
decoding, as the extraction test of memorization needs (Carlini et al. 2023), is
:meth:`SamplingParams.argmax`: temperature 0 *and* ``repetition_penalty`` 1.

Differences between the engines that remain (not sampling rules, but worth knowing):
``transformers`` penalises every token of the sequence (prompt included) while llama.cpp
penalises the last 64 (``last_n_tokens_size``); ``transformers`` keeps the model's
``generation_config`` ``top_k`` (50 unless the model sets it) when sampling, llama.cpp is
given ``top_k=0`` (off).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mimetic.core.config import GenerateConfig


@dataclass(frozen=True)
class SamplingParams:
    """Decoding settings shared by every engine.

    Attributes:
        temperature: softmax temperature; 0 is greedy decoding (see the module docstring).
        top_p: nucleus sampling, the smallest set of tokens with probability mass ≥ ``top_p``
            (Holtzman et al. 2020); 1 disables it.
        min_p: min-p sampling, tokens below ``min_p`` × the top token's probability are dropped
            (Nguyen et al. 2024, "Turning Up the Heat: Min-p Sampling"); 0 disables it.
        repetition_penalty: CTRL repetition penalty (Keskar et al. 2019); 1 disables it.
        max_new_tokens: the most tokens to generate after the prompt.
    """

    temperature: float = 1.2  # the defaults of GenerateConfig (see its docstring for why 1.2)
    top_p: float = 1.0
    min_p: float = 0.0
    repetition_penalty: float = 1.0
    max_new_tokens: int = 200

    @classmethod
    def from_config(cls, gc: GenerateConfig, max_new_tokens: int | None = None) -> "SamplingParams":
        """The sampling part of ``gc``; ``max_new_tokens`` overrides ``gc.max_new_tokens``
        (evaluation generates ``[evaluate] new_tokens`` with the ``[generate]`` sampling)."""
        return cls(
            temperature=gc.temperature,
            top_p=gc.top_p,
            min_p=gc.min_p,
            repetition_penalty=gc.repetition_penalty,
            max_new_tokens=gc.max_new_tokens if max_new_tokens is None else max_new_tokens,
        )

    @classmethod
    def argmax(cls, max_new_tokens: int) -> "SamplingParams":
        """Pure argmax decoding: greedy and no repetition penalty (the extraction test's setting)."""
        return cls(temperature=0.0, top_p=1.0, min_p=0.0, repetition_penalty=1.0, max_new_tokens=max_new_tokens)

    @property
    def greedy(self) -> bool:
        """True when decoding is greedy (temperature 0)."""
        return self.temperature == 0

    def transformers_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``transformers``' ``model.generate``.

        Greedy: ``do_sample=False`` and no temperature/top-p/min-p (transformers warns when
        they are set without sampling). ``min_p`` 0 is passed as ``None`` (off).
        """
        kw: dict[str, Any] = {
            "max_new_tokens": self.max_new_tokens,
            "do_sample": not self.greedy,
            "repetition_penalty": self.repetition_penalty,
        }
        if not self.greedy:
            kw.update(temperature=self.temperature, top_p=self.top_p, min_p=self.min_p or None)
        return kw

    def llama_cpp_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``llama_cpp.Llama.create_completion`` (seed and stream excluded).

        Greedy: temperature 0 and ``top_k=1``, with top-p 1 and min-p 0 (off); sampling:
        ``top_k=0`` (off), so only top-p and min-p truncate, as in transformers.
        """
        return {
            "max_tokens": self.max_new_tokens,
            "temperature": 0.0 if self.greedy else self.temperature,
            "top_p": 1.0 if self.greedy else self.top_p,
            "min_p": 0.0 if self.greedy else self.min_p,
            "top_k": 1 if self.greedy else 0,
            "repeat_penalty": self.repetition_penalty,
        }

    def modelfile_parameters(self) -> list[str]:
        """Ollama Modelfile ``PARAMETER`` lines; ``temperature 0`` makes Ollama decode greedily,
        and ``repeat_penalty`` is written whatever the temperature (the greedy rule above)."""
        return [
            f"PARAMETER temperature {self.temperature:g}",
            f"PARAMETER top_p {self.top_p:g}",
            f"PARAMETER min_p {self.min_p:g}",
            f"PARAMETER repeat_penalty {self.repetition_penalty:g}",
            f"PARAMETER num_predict {self.max_new_tokens}",
        ]
