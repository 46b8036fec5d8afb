"""Models: loading a base model and its tokenizer (``loading``), NLL on text (``nll``), the CPU
attention kernel, processes (``distributed``), the hardware probe, the generation engines
(transformers and llama.cpp) and sampling settings."""
