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

Both engines run the same chain, in transformers' order: the repetition penalty on the raw
logits, then temperature, top-k (:data:`TOP_K`, passed explicitly to both), top-p, min-p,
typical-p, and the draw (or the greedy pick). llama-cpp-python's own ``create_completion`` applies the
temperature *after* top-p and min-p and penalises only the last 64 tokens, so mimetic's
llama.cpp engine builds its own sampler chain from :meth:`SamplingParams.llama_cpp_chain`
(:class:`mimetic.models.engines.GGUFVoice`), with the penalty over the whole sequence, prompt
included, as transformers does. :meth:`SamplingParams.llama_cpp_kwargs` remains for callers of
``create_completion`` (the server), where those differences remain (and top-k is off). The random draws
themselves differ (PyTorch's generator vs llama.cpp's), so the same seed gives a different text
in each engine, from the same distribution; greedy decoding gives the same tokens
(``tests/test_engines.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mimetic.core.config import GenerateConfig

TOP_K = 50
"""Top-k when sampling: transformers' own default (``GenerationConfig``'s ``top_k`` 50), which
every figure in ``benchmarks/RESULTS.md`` was sampled with; now passed explicitly to both
engines, so a model's ``generation_config.json`` cannot change it in one engine only."""


@dataclass(frozen=True)
class SamplingParams:
    """Decoding settings shared by every engine.

    Attributes:
        temperature: softmax temperature; 0 is greedy decoding (see the module docstring).
        top_p: nucleus sampling, the smallest set of tokens with probability mass ≥ ``top_p``
            (Holtzman et al. 2020); 1 disables it.
        min_p: min-p sampling, tokens below ``min_p`` × the top token's probability are dropped
            (Nguyen et al. 2024, "Turning Up the Heat: Min-p Sampling"); 0 disables it.
        typical_p: locally typical sampling (Meister et al. 2023, "Locally Typical Sampling",
            TACL 11): keep the tokens whose surprisal is closest to the distribution's entropy,
            up to this probability mass; 1 disables it.
        repetition_penalty: CTRL repetition penalty (Keskar et al. 2019); 1 disables it.
        max_new_tokens: the most tokens to generate after the prompt.
    """

    temperature: float = 1.0  # the defaults of GenerateConfig (see its docstring for why)
    top_p: float = 0.95
    min_p: float = 0.0
    typical_p: float = 1.0
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
            typical_p=gc.typical_p,
            repetition_penalty=gc.repetition_penalty,
            max_new_tokens=gc.max_new_tokens if max_new_tokens is None else max_new_tokens,
        )

    @classmethod
    def argmax(cls, max_new_tokens: int) -> "SamplingParams":
        """Pure argmax decoding: greedy and no repetition penalty (the extraction test's setting)."""
        return cls(temperature=0.0, top_p=1.0, min_p=0.0, typical_p=1.0, repetition_penalty=1.0, max_new_tokens=max_new_tokens)

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
            kw.update(temperature=self.temperature, top_k=TOP_K, top_p=self.top_p, min_p=self.min_p or None, typical_p=self.typical_p)
        return kw

    def llama_cpp_chain(self) -> list[tuple[str, tuple[Any, ...]]]:
        """The llama.cpp sampler chain equivalent to :meth:`transformers_kwargs`, as
        ``(method of llama_cpp._internals.LlamaSampler without "add_", arguments)`` in order;
        the penalty's history length and the vocabulary size, and the draw's seed, are filled
        in by the engine (``None`` here).

        Greedy: penalty, then the greedy pick. Sampling: penalty, temperature, top-k
        (:data:`TOP_K`), top-p, min-p, typical-p (each left out when it is off), the draw.
        """
        chain: list[tuple[str, tuple[Any, ...]]] = []
        if self.repetition_penalty != 1.0:
            chain.append(("penalties", (None, None, self.repetition_penalty, 0.0, 0.0)))
        if self.greedy:
            return chain + [("greedy", ())]
        chain.append(("temp", (self.temperature,)))
        if TOP_K:
            chain.append(("top_k", (TOP_K,)))
        if self.top_p < 1.0:
            chain.append(("top_p", (self.top_p, 1)))
        if self.min_p > 0.0:
            chain.append(("min_p", (self.min_p, 1)))
        if self.typical_p < 1.0:
            chain.append(("typical", (self.typical_p, 1)))
        return chain + [("dist", (None,))]

    def llama_cpp_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``llama_cpp.Llama.create_completion`` (seed and stream excluded).

        Greedy: temperature 0 and ``top_k=1``, with top-p 1 and min-p 0 (off); sampling:
        ``top_k=0`` (off). Not exactly transformers' chain (see the module docstring: the order
        of the steps, the penalty's window, top-k); mimetic's own engines use
        :meth:`llama_cpp_chain`.
        """
        return {
            "max_tokens": self.max_new_tokens,
            "temperature": 0.0 if self.greedy else self.temperature,
            "top_p": 1.0 if self.greedy else self.top_p,
            "min_p": 0.0 if self.greedy else self.min_p,
            "typical_p": 1.0 if self.greedy else self.typical_p,
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
            *([f"PARAMETER typical_p {self.typical_p:g}"] if self.typical_p < 1.0 else []),
            f"PARAMETER repeat_penalty {self.repetition_penalty:g}",
            f"PARAMETER num_predict {self.max_new_tokens}",
        ]
