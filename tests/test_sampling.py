"""SamplingParams: one set of decoding settings, translated for transformers, llama.cpp and Ollama,
with one greedy rule (temperature 0: no sampling; the repetition penalty still applies)."""

import dataclasses

import pytest

from mimetic.core.config import GenerateConfig
from mimetic.models.sampling import SamplingParams


def test_from_config_takes_the_sampling_fields_and_is_frozen():
    gc = GenerateConfig(temperature=0.7, top_p=0.9, min_p=0.1, repetition_penalty=1.2, max_new_tokens=33, seed=5)
    p = SamplingParams.from_config(gc)
    assert p == SamplingParams(temperature=0.7, top_p=0.9, min_p=0.1, repetition_penalty=1.2, max_new_tokens=33)
    assert SamplingParams.from_config(gc, max_new_tokens=8).max_new_tokens == 8
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.temperature = 1.0


def test_sampling_translations():
    p = SamplingParams(temperature=0.8, top_p=0.95, min_p=0.05, repetition_penalty=1.1, max_new_tokens=20)
    assert p.transformers_kwargs() == {"max_new_tokens": 20, "do_sample": True, "repetition_penalty": 1.1,
                                       "temperature": 0.8, "top_k": 50, "top_p": 0.95, "min_p": 0.05, "typical_p": 1.0}
    assert p.llama_cpp_kwargs() == {"max_tokens": 20, "temperature": 0.8, "top_p": 0.95, "min_p": 0.05, "typical_p": 1.0,
                                    "top_k": 0, "repeat_penalty": 1.1}
    assert SamplingParams(min_p=0.0).transformers_kwargs()["min_p"] is None  # 0 is off


def test_typical_p_reaches_every_engine():
    p = SamplingParams.from_config(GenerateConfig(temperature=1.0, top_p=1.0, typical_p=0.9))
    assert p.transformers_kwargs()["typical_p"] == 0.9 and p.llama_cpp_kwargs()["typical_p"] == 0.9
    assert [n for n, _ in p.llama_cpp_chain()] == ["temp", "top_k", "typical", "dist"]  # transformers' order
    assert "PARAMETER typical_p 0.9" in p.modelfile_parameters()
    assert "typical" not in [n for n, _ in SamplingParams().llama_cpp_chain()]  # 1 is off
    with pytest.raises(Exception, match="typical_p"):
        GenerateConfig(typical_p=0)


def test_greedy_is_argmax_in_every_engine():
    p = SamplingParams.from_config(GenerateConfig(temperature=0, repetition_penalty=1.3, max_new_tokens=9))
    assert p.greedy
    kw = p.transformers_kwargs()
    assert kw["do_sample"] is False and not {"temperature", "top_p", "min_p"} & set(kw)
    lc = p.llama_cpp_kwargs()
    assert lc["temperature"] == 0.0 and lc["top_k"] == 1 and lc["top_p"] == 1.0 and lc["min_p"] == 0.0
    assert "PARAMETER temperature 0" in p.modelfile_parameters()


@pytest.mark.parametrize("temperature", [0.0, 0.8])
def test_repetition_penalty_rule_is_the_same_in_all_three(temperature):
    p = SamplingParams(temperature=temperature, repetition_penalty=1.3)
    assert p.transformers_kwargs()["repetition_penalty"] == 1.3
    assert p.llama_cpp_kwargs()["repeat_penalty"] == 1.3
    assert "PARAMETER repeat_penalty 1.3" in p.modelfile_parameters()


def test_argmax_drops_the_penalty_too():
    p = SamplingParams.argmax(50)
    assert p.greedy and p.max_new_tokens == 50
    assert p.transformers_kwargs() == {"max_new_tokens": 50, "do_sample": False, "repetition_penalty": 1.0}
    assert p.llama_cpp_kwargs()["repeat_penalty"] == 1.0


def test_modelfile_parameters_use_ollama_names():
    lines = SamplingParams.from_config(GenerateConfig(temperature=0.8, top_p=0.95, min_p=0.05,
                                                      repetition_penalty=1.1)).modelfile_parameters()
    assert lines == ["PARAMETER temperature 0.8", "PARAMETER top_p 0.95", "PARAMETER min_p 0.05",
                     "PARAMETER repeat_penalty 1.1", "PARAMETER num_predict 200"]
    assert SamplingParams() == SamplingParams.from_config(GenerateConfig())  # one set of defaults
