"""Training: ``loop`` (the one training loop, ``fit``), ``session`` (what every trainer sets up),
``sft`` (supervised fine-tuning with LoRA) and ``preference`` (DPO / KTO / self-play polish)."""
