"""One config object per pipeline stage, and the voice's ``mimetic.toml`` that holds them all.

The dataclasses follow peft's style: plain fields with defaults, checked in ``__post_init__``.
``VoiceConfig`` is what a workspace's ``mimetic.toml`` stores: the resolved configuration of
every stage, so that a run can always be explained and repeated.
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mimetic.errors import MimeticError

EMBEDDED_MODEL = "smollm2-135m-instruct"
EMBEDDED_ALIASES = {EMBEDDED_MODEL, "embedded", "default", "smollm2"}
"""Names that mean the embedded model."""


REDACTIONS = ("emails", "urls", "phones", "ips", "cards")
"""Kinds of personal data ``ingest.redact`` can replace with placeholders."""


@dataclass
class IngestConfig:
    """How ``mimetic ingest`` reads, cleans and deduplicates a folder of writing.

    Attributes:
        min_words: documents with fewer words after cleaning are skipped (a title, a stub).
        max_file_mb: files (and zip members, uncompressed) larger than this (MiB) are skipped
            with a reason, never half-read.
        join_wrapped_lines: join hard-wrapped lines inside a paragraph into one line.
        remove_blockquotes: drop quotations (Markdown ``>``, HTML ``blockquote`` in EPUB):
            usually other people's words.
        authors: the writer's e-mail addresses or names. Mail and chat exports keep only
            what they wrote; empty: the most frequent sender is taken as the writer.
        redact: personal data to replace with stable placeholders: any of ``emails``,
            ``urls``, ``phones``, ``ips``, ``cards``.
        aliases: names to replace everywhere (``{"Anna Berg": "A."}``), e.g. to keep a
            small model from taking someone else's name as its own.
        exclude_names: paragraphs that mention any of these names are left out.
        keep: glob patterns of source paths never removed as duplicates or boilerplate.
        near_duplicate_threshold: Jaccard similarity of word shingles at or above which a
            document or long paragraph is a near duplicate (default 0.8).
        shingle_words: words per shingle for near-duplicate detection (default 5).
        min_duplicate_paragraph_words: shorter paragraphs ("Yes.", "Thanks!") are never
            removed as duplicates.
        boilerplate_min_documents, boilerplate_share: a paragraph of at most 80 words
            found in at least this many documents and this share of them is boilerplate
            (a blog footer, an e-mail disclaimer) and removed everywhere.
        names_report: how many names the names report lists.
        encoding: the text encoding of plain-text and Markdown files (``cp1252``,
            ``latin-1``, ``mac_roman``, …: any name Python knows), for when detection picks the
            wrong one (the corpus report names files it was unsure of); empty: detect it.
    """

    min_words: int = 20
    max_file_mb: float = 64.0
    join_wrapped_lines: bool = True
    remove_blockquotes: bool = True
    authors: list[str] = field(default_factory=list)
    redact: list[str] = field(default_factory=list)
    aliases: dict[str, str] = field(default_factory=dict)
    exclude_names: list[str] = field(default_factory=list)
    keep: list[str] = field(default_factory=list)
    near_duplicate_threshold: float = 0.8
    shingle_words: int = 5
    min_duplicate_paragraph_words: int = 8
    boilerplate_min_documents: int = 5
    boilerplate_share: float = 0.05
    names_report: int = 50
    encoding: str = ""

    def __post_init__(self) -> None:
        _check(self.min_words >= 0, "ingest.min_words must be 0 or more")
        _check(not self.encoding or _known_codec(self.encoding),
               f"ingest.encoding: unknown encoding {self.encoding!r}; try cp1252, latin-1, mac_roman, utf-8 or utf-16")
        _check(self.max_file_mb > 0, "ingest.max_file_mb must be positive")
        _check(0 < self.near_duplicate_threshold <= 1, "ingest.near_duplicate_threshold must be in (0, 1]")
        _check(1 <= self.shingle_words <= 20, "ingest.shingle_words must be between 1 and 20")
        _check(self.boilerplate_min_documents >= 2, "ingest.boilerplate_min_documents must be 2 or more")
        _check(0 <= self.boilerplate_share <= 1, "ingest.boilerplate_share must be in [0, 1]")
        bad = [k for k in self.redact if k not in REDACTIONS]
        _check(not bad, f"ingest.redact: unknown kind(s) {', '.join(bad)}; choose from {', '.join(REDACTIONS)}")


@dataclass
class PrepareConfig:
    """How ``mimetic prepare`` turns the cleaned corpus into training examples.

    Attributes:
        format: ``"completion"`` (plain text, the model learns to continue your prose),
            ``"chat"`` (each chunk becomes an assistant reply through the model's chat template),
            ``"brief"`` (each chunk is the reply to a brief of it: write on a brief) or ``"mixed"``
            (a third each of write, continue and rewrite examples, one adapter for the three
            modes; see :mod:`mimetic.corpus.briefs`). The default main job stays ``completion``.
        max_tokens: largest example, in tokens of the base model's tokenizer (default 512).
        min_tokens: shorter chunks are merged with a neighbour or dropped.
        held_out_fraction: share of documents (or of sections, for corpora with few documents)
            kept out of training to measure held-out NLL. Default 0.1.
        min_held_out_documents: below this many held-out documents the split is made by
            contiguous sections of each document instead.
        section_words: section size (words) for the section split.
        seed: seed of the split; the same seed and corpus give the same split.
        system_prompt: system prompt for the chat format (and for writing with a chat voice).
        brief_model: where briefs (``brief`` and ``mixed`` formats) come from: ``auto`` (the base
            model when it is an instruct model, else extractive), ``base``, ``extractive``, an
            ``http://`` address of an OpenAI-compatible server (on this machine, or one the writer
            trusts with every passage: the passages are sent to it), a ``.gguf`` file
            or a transformers model folder (:func:`mimetic.corpus.briefs.resolve_source`). A server's
            API key, if it needs one, is read from ``MIMETIC_BRIEF_API_KEY``, never stored.
        brief_model_name: the model to ask on that server (default: the first it lists).
    """

    format: str = "completion"
    max_tokens: int = 512
    min_tokens: int = 16
    held_out_fraction: float = 0.1
    min_held_out_documents: int = 3
    section_words: int = 2000
    seed: int = 1234
    system_prompt: str = ""
    brief_model: str = "auto"
    brief_model_name: str = ""

    def __post_init__(self) -> None:
        _check(self.format in ("completion", "chat", "brief", "mixed"), "prepare.format must be 'completion', 'chat', 'brief' or 'mixed'")
        _check(32 <= self.max_tokens <= 32768, "prepare.max_tokens must be between 32 and 32768")
        _check(0 < self.held_out_fraction < 0.5, "prepare.held_out_fraction must be in (0, 0.5)")
        _check(self.section_words >= 100, "prepare.section_words must be at least 100")


@dataclass
class TrainConfig:
    """LoRA fine-tuning settings for ``mimetic train``.

    Defaults: LoRA rank 16, alpha 32 on all linear projections (the common QLoRA-paper-style
    setting, Dettmers et al. 2023); AdamW; cosine schedule with 5% warmup. No LoRA dropout: a
    fresh mask for every projection cost a quarter of a CPU step (``benchmarks/step_profile.py``)
    and a voice trains for one or two epochs, where dropout's regularisation has little to do
    (Unsloth's default is 0 too); 0.05–0.1 is the QLoRA paper's choice for many epochs.
    Two epochs at most by default, within the time budget: once a CPU step ran at the machine's
    speed, one epoch of a 300k-word corpus took 8 of the main job's 15 minutes, and the second
    epoch improved every measure on Hawthorne's novels (held-out NLL −10.6% → −11.3%, voice sets
    attributed 11 → 12 of 12, range 0.94× → 0.96× the writer's, longest overlap 32 → 31
    characters; ``benchmarks/RESULTS.md``) as it did the blog's NLL (−8.4% → −9.1%). Early stopping
    and the best adapter on held-out NLL guard against the memorising that a third epoch showed
    in one of this project's source accounts.
    ``learning_rate`` of ``None`` means the size-aware default of :func:`default_learning_rate`.
    ``preset`` names the preset (:mod:`mimetic.core.presets`) these settings were written from, if any;
    it is a record only: the settings themselves are what count.

    Versions: ``version`` names the version a run makes, ``where`` selects the documents it
    trains on (:mod:`mimetic.core.selection`: ``date < 2017``); both belong to one run (kept in its
    ``config.toml`` so a resumed run keeps them) and are never saved as the voice's settings.

    Batching: ``group_by_length`` puts examples of similar length in one batch (less padding);
    ``packing`` instead concatenates whole examples into rows of up to the longest example's
    length (first-fit decreasing), each with its own position ids, so no token attends across
    examples (transformers builds a block-diagonal mask from reset position ids) and almost no
    position is padding. The loss is the same as unpacked, token for token.

    Speed and memory: ``precision`` is the compute precision (``auto``: see
    :func:`mimetic.models.loading.pick_precision`); ``base_weights`` the dtype the frozen base weights
    are stored in (``auto``: bf16 when the compute precision is bf16, else fp32; ``bf16``
    forces it and implies bf16 compute); ``compile`` runs the training forward and
    backward through ``torch.compile`` (inductor, ``dynamic=True``, its cache in the user cache
    directory): on a CPU the first step compiles for minutes and the compiled steps measured
    0.7× the plain ones (SmolLM2-135M, 2-core EPYC, ``benchmarks/RESULTS.md``), so it is off.

    Evaluation: every ``eval_every`` steps on a fixed, seeded subset of about ``eval_tokens``
    held-out tokens (the same passages every time, so the curve compares like with like; 4,096
    tokens keep one evaluation near 0.5% of a 15-minute run on a CPU), and on the whole held-out
    split at the end (the subset's sums plus the rest of the split); the base model's NLL on
    both is measured once per voice, before the first step, and cached. 0 uses the whole split
    every time. Under a time budget measuring has two shares of its own, so that it takes at
    most ``max_eval_share + max_whole_share`` of the budget (a quarter) whatever the CPU does
    that day, and a slow or busy machine still trains: the in-run evaluations are spaced (and
    their subset sized by the forward speed timed on one held-out batch at the start) so that
    they take at most ``max_eval_share`` (0.1: the goal of issues 20 and 32; 0 keeps every
    ``eval_every``), and the two passes that give the run's figures — the base model's before
    the first step and the kept adapter's at the end — at most ``max_whole_share`` (0.15)
    together. They get their own share because they are the measurement a writer reads (the
    held-out NLL change) and are worth more tokens than a point of the curve, and because a
    single share that also held them left the in-run evaluations nothing on a slow machine.
    When the whole held-out split would not fit in it at the speed timed at the start, both are
    scored on one seeded sample of whole held-out examples that fits (the same sample for the
    base model and the voice, so the change is paired; it holds the in-run subset), the run
    records how many held-out tokens it measured (``held_out_tokens_measured`` of
    ``held_out_tokens`` in ``summary.json``) and a warning says so; ``mimetic evaluate`` measures
    the whole split. The base model's NLL is cached per held-out example, so a cached value is
    never measured again. 0 always measures the whole split. Without a time budget nothing is
    sampled.

    Stopping: ``epochs`` (may be fractional), ``max_steps`` and ``time_budget_min`` (minutes of
    the run's whole wall time: loading, measuring and the final evaluation included; the one name
    of this setting, from ``--time-budget`` to the loop): whichever comes first. The schedule is shrunk to fit a time budget.
    Early stopping ends training after ``patience`` evaluations without an improvement of the
    held-out NLL by ``min_delta`` nats; the best adapter is kept.
    """

    base_model: str = EMBEDDED_MODEL
    preset: str = ""
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.0
    target_modules: str = "all-linear"
    learning_rate: float | None = None
    lr_schedule: str = "cosine"
    warmup_ratio: float = 0.05
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    batch_size: int = 4
    grad_accum: int = 1
    epochs: float = 2.0
    max_steps: int | None = None
    time_budget_min: float | None = None
    eval_every: int = 25
    eval_tokens: int = 4096
    max_eval_share: float = 0.1
    max_whole_share: float = 0.15
    eval_batch_size: int = 8
    patience: int = 3
    min_delta: float = 0.002
    checkpoint_every: int = 50
    log_every: int = 5
    seed: int = 1234
    device: str = "auto"
    precision: str = "auto"
    load_in_4bit: bool = False
    group_by_length: bool = True
    packing: bool = False
    base_weights: str = "auto"
    compile: bool = False
    version: str = ""
    where: str = ""

    def __post_init__(self) -> None:
        _check(self.lora_r > 0 and self.lora_alpha > 0, "train.lora_r and train.lora_alpha must be positive")
        _check(0 <= self.lora_dropout < 1, "train.lora_dropout must be in [0, 1)")
        _check(self.lr_schedule in ("cosine", "linear", "constant"), "train.lr_schedule must be cosine, linear or constant")
        _check(self.batch_size >= 1 and self.grad_accum >= 1, "train.batch_size and train.grad_accum must be at least 1")
        _check(self.epochs > 0, "train.epochs must be positive")
        _check(self.max_steps is None or self.max_steps >= 1, "train.max_steps must be at least 1")
        _check(self.time_budget_min is None or self.time_budget_min > 0, "train.time_budget_min must be positive")
        _check(self.eval_every >= 1 and self.checkpoint_every >= 1, "train.eval_every and train.checkpoint_every must be at least 1")
        _check(0 <= self.max_eval_share < 1, "train.max_eval_share must be between 0 and 1 (0: evaluate every eval_every steps)")
        _check(0 <= self.max_whole_share < 1, "train.max_whole_share must be between 0 and 1 (0: always the whole held-out split)")
        _check(self.eval_tokens >= 0, "train.eval_tokens must be 0 (the whole held-out split) or more")
        _check(self.device in ("auto", "cpu", "cuda", "mps"), "train.device must be auto, cpu, cuda or mps")
        _check(self.precision in ("auto", "fp32", "bf16", "fp16"), "train.precision must be auto, fp32, bf16 or fp16")
        _check(self.learning_rate is None or self.learning_rate > 0, "train.learning_rate must be positive")
        _check(self.base_weights in ("auto", "fp32", "bf16"), "train.base_weights must be auto, fp32 or bf16")
        _check(not (self.base_weights == "bf16" and self.precision in ("fp32", "fp16")),
               "train.base_weights = bf16 needs train.precision auto or bf16")


@dataclass
class GenerateConfig:
    """Sampling settings for ``mimetic write``, ``mimetic compare`` and the evaluation's samples.

    ``min_p`` follows Nguyen et al. 2024 ("Turning Up the Heat: Min-p Sampling"); 0 disables it.
    ``typical_p`` is locally typical sampling (Meister et al. 2023); 1 disables it.
    ``temperature`` 0 means greedy decoding.

    The defaults, temperature 1 and top-p 0.95 (no min-p, typical-p or repetition penalty), were
    chosen against every measure a reader and a stylometrist apply at once (``benchmarks/
    sampling_sweep.py``; the 15-minute Dickens voice of ``benchmarks/RESULTS.md``, 80 held-out
    openings, the same seeds for every setting): against the earlier temperature 1.2 they cut
    invented words from 2.7 to 1.1 per 1,000, kept every 1,000-word set attributed to the writer
    (16 of 16) and the classifier's ROC AUC where it was (0.95 against 0.96: within its noise),
    and gave up a little range (the spread of the voice's sets 0.90 of the writer's, against
    0.92) and some heat (the voice's NLL of its own samples 1.19 nats/token below its NLL of the
    writer's text, against 0.44). Temperature 1 alone invented 1.9 per 1,000; min-p 0.05 and
    typical-p 0.9 at temperature 1 fell into repeated made-up words ("thauthe-hepthe" ×15) and
    invented 3.5 and 3.1. On the unseen novelist of issue 33 the same move from 1.2 to 1 cut
    invented words from 3.1 to 1.1 with attribution 7 of 11 against 5. Lower the temperature
    for safer drafts; raise it for more surprise (and more invented words).

    ``engine`` chooses what generates (:func:`mimetic.models.engines.open_voice`): ``auto`` (llama.cpp
    on the base model's GGUF with the run's adapter converted to a GGUF LoRA, else transformers,
    said in one line), ``llama.cpp`` or ``transformers`` (forced: for tests and benchmarks).
    """

    max_new_tokens: int = 200
    temperature: float = 1.0
    top_p: float = 0.95
    min_p: float = 0.0
    typical_p: float = 1.0
    repetition_penalty: float = 1.0
    seed: int = 0
    num_samples: int = 1
    system_prompt: str = ""
    engine: str = "auto"

    def __post_init__(self) -> None:
        _check(self.engine in ("auto", "llama.cpp", "transformers"), "generate.engine must be auto, llama.cpp or transformers")
        _check(self.max_new_tokens >= 1, "generate.max_new_tokens must be at least 1")
        _check(self.temperature >= 0, "generate.temperature must be 0 or more")
        _check(0 < self.top_p <= 1, "generate.top_p must be in (0, 1]")
        _check(0 <= self.min_p < 1, "generate.min_p must be in [0, 1)")
        _check(0 < self.typical_p <= 1, "generate.typical_p must be in (0, 1]")
        _check(self.num_samples >= 1, "generate.num_samples must be at least 1")


@dataclass
class EvaluateConfig:
    """Settings for ``mimetic evaluate``.

    Samples: continuations of held-out passages from a ``prefix_tokens`` prefix, ``new_tokens``
    new tokens each, from the base model and the voice with the same seeds, until each has
    written ``sample_words`` words (10,000 words: ten 1,000-word sets for attribution, and 56
    pairs of 150-word passages for the reader's classifier, whose ROC AUC is then within about
    ±0.1 — ±0.13 with 5,000 words, ``benchmarks/RESULTS.md``; 5,000 words is the least for stable
    most-frequent-word frequencies, Eder 2015, "Does size matter? Authorship attribution, small
    samples, big problem", DSH 30(2)). Sampling uses the ``[generate]`` settings. A longer
    ``prefix_tokens`` is a kinder test of continuity: on the README's Dickens voice, 256 tokens
    instead of 64 kept the opening's names in 78% of passages instead of 61% (two draws; the
    classifier's ROC AUC 0.92 with either, ``benchmarks/RESULTS.md``); 64 stays the default so
    that figures stay comparable.

    Stylometry: ``n_mfw`` most-frequent words of the training text (300, the usual Delta
    setting), profiles of ``set_words``-word sample sets, ``metric`` ``cosine`` (Cosine Delta,
    the most robust variant in Evert et al. 2017) or ``burrows``.

    Memorization: a sample is flagged at a verbatim overlap of ``flag_tokens`` tokens or a
    13-gram share of ``flag_share_13gram``; extraction uses ``extraction_prefixes`` training
    windows of 50-token prefix and 50-token greedy continuation (Carlini et al. 2023).

    Range: the spread of each group's sets is their mean pairwise Delta (``metric``,
    :func:`mimetic.text.stylometry.spread`). A voice whose spread is below ``min_spread_ratio`` times
    the writer's own (held-out sets) is flagged as narrower than its writer. 0.8 because on
    five novelists of the shared corpora (Austen, Dickens, Doyle, Hawthorne, Twain; 1,000-word
    sets, 300 MFW), two random groups of 5 sets of the same held-out writing fell below 0.8 in
    0-5% of 200 draws (5th percentile 0.82-0.94): a lower ratio is rarely noise. 0 turns the
    flag off.

    Modes: a voice trained with briefs (``brief``, ``mixed``) is also asked, for each mode it
    learned, on ``mode_prompts`` held-out briefs, openings or paraphrases (:mod:`mimetic.corpus.briefs`),
    side by side with the base model given the same requests.

    ``bootstrap`` resamples (over held-out documents) give the NLL 95% intervals;
    ``max_held_out_tokens`` (0 = all) caps the NLL pass on very large held-out splits.
    """

    sample_words: int = 10000
    prefix_tokens: int = 64
    new_tokens: int = 256
    batch_size: int = 8
    mode_prompts: int = 24
    n_mfw: int = 300
    set_words: int = 1000
    metric: str = "cosine"
    flag_tokens: int = 50
    flag_share_13gram: float = 0.1
    extraction_prefixes: int = 32
    bootstrap: int = 1000
    max_held_out_tokens: int = 0
    seed: int = 0
    min_spread_ratio: float = 0.8

    def __post_init__(self) -> None:
        _check(self.sample_words >= 200, "evaluate.sample_words must be at least 200")
        _check(0 <= self.min_spread_ratio <= 1, "evaluate.min_spread_ratio must be in [0, 1]")
        _check(self.prefix_tokens >= 8 and self.new_tokens >= 16, "evaluate.prefix_tokens ≥ 8 and new_tokens ≥ 16")
        _check(self.metric in ("cosine", "burrows"), "evaluate.metric must be 'cosine' or 'burrows'")
        _check(self.n_mfw >= 10 and self.set_words >= 100, "evaluate.n_mfw ≥ 10 and set_words ≥ 100")
        _check(self.bootstrap >= 100, "evaluate.bootstrap must be at least 100")


@dataclass
class PolishConfig:
    """Settings for ``mimetic polish``: a preference stage after supervised fine-tuning.

    Self-play pairs (Chen et al. 2024, "Self-Play Fine-Tuning Converts Weak Language Models to
    Strong Language Models", SPIN): the prompt is the opening (``prompt_tokens``) of one of the
    writer's *training* passages, *chosen* is the writer's real continuation (the next
    ``continuation_tokens``), *rejected* is the fine-tuned voice's own sample from the same
    opening (``[generate]`` sampling, seeded, ``continuation_tokens`` new tokens). The loss is
    DPO's (Rafailov et al. 2023, "Direct Preference Optimization"), with the fine-tuned adapter
    as the frozen reference.

    Attributes:
        pairs: preference pairs to build (one per training passage, at most).
        prompt_tokens, continuation_tokens: length of the opening, and of each continuation.
        beta: DPO's β, the strength of the pull towards the reference (0.1: the DPO paper's
            setting for most of its experiments, and TRL's ``DPOConfig`` default).
        learning_rate: ``None``: 1/40 of the size-aware LoRA rule
            (:func:`default_learning_rate`), the ratio of the DPO to the SFT learning rate in
            Zephyr's recipe (Tunstall et al. 2023: 5e-7 against 2e-5); about 3.3e-5 for
            SmolLM2-135M.
        epochs, max_steps: passes over the pairs, and an optional cap on optimizer steps.
        batch_size: pairs per optimizer step.
        eval_every: steps between held-out evaluations (which also log DPO reward accuracy
            and margins on the training pairs).
        held_out_examples: held-out examples scored at each evaluation (0: all), a seeded subset.
        generate_batch_size: openings sampled together when building the pairs.
        seed: selects the passages and seeds the samples and the training order.
        max_nll_rise: a feedback run (``--from-feedback``) keeps the adapter that fits the
            writer's marks best (lowest preference loss on them) among those whose held-out NLL
            rose by at most this share over the parent's (0.01: 1%); beyond it the voice is
            learning the marks rather than the writer (the "stylistic overfitting" one account
            warns of), and that adapter is not kept. Self-play runs keep the best held-out NLL.
    """

    pairs: int = 64
    prompt_tokens: int = 64
    continuation_tokens: int = 128
    beta: float = 0.1
    learning_rate: float | None = None
    epochs: float = 1.0
    max_steps: int | None = None
    batch_size: int = 4
    eval_every: int = 8
    held_out_examples: int = 64
    generate_batch_size: int = 8
    seed: int = 1234
    max_nll_rise: float = 0.01

    def __post_init__(self) -> None:
        _check(self.pairs >= 1, "polish.pairs must be at least 1")
        _check(self.prompt_tokens >= 1 and self.continuation_tokens >= 1,
               "polish.prompt_tokens and polish.continuation_tokens must be at least 1")
        _check(self.beta > 0, "polish.beta must be positive")
        _check(self.learning_rate is None or self.learning_rate > 0, "polish.learning_rate must be positive")
        _check(self.epochs > 0, "polish.epochs must be positive")
        _check(self.max_steps is None or self.max_steps >= 1, "polish.max_steps must be at least 1")
        _check(self.batch_size >= 1 and self.generate_batch_size >= 1 and self.eval_every >= 1,
               "polish.batch_size, polish.generate_batch_size and polish.eval_every must be at least 1")
        _check(self.held_out_examples >= 0, "polish.held_out_examples must be 0 or more")
        _check(self.max_nll_rise >= 0, "polish.max_nll_rise must be 0 or more")


EXPORT_FORMATS = ("adapter", "merged", "gguf", "lora-gguf", "ollama")
QUANT_TYPES = ("f16", "q8_0", "q4_k_m")


@dataclass
class ExportConfig:
    """What ``mimetic export`` writes.

    Attributes:
        formats: any of ``adapter``, ``merged``, ``gguf``, ``lora-gguf``, ``ollama``.
        quantizations: GGUF types of the merged model: ``f16``, ``q8_0``, ``q4_k_m``
            (llama.cpp's K-quant "medium"; tensors whose width is not a multiple of 256 fall
            back to a legacy type, as llama.cpp does).
        merged_dtype: ``float16``, ``bfloat16`` or ``float32`` for ``merged/``.
        verify: compare every GGUF with the merged model in llama.cpp (recommended).
        verify_examples, verify_tokens: held-out examples and tokens per example compared.
        min_agreement: argmax agreement below this fails the export for f16 and q8_0 (q4_k_m
            is reported only: 4-bit weights do change some next-token choices).
        system_prompt: the voice's system prompt for chat; empty: the voice's own
            (``prepare.system_prompt``) or a firm default that keeps a small model's identity.
        consent: the consent statement written into the model card.
    """

    formats: list[str] = field(default_factory=lambda: list(EXPORT_FORMATS))
    quantizations: list[str] = field(default_factory=lambda: list(QUANT_TYPES))
    merged_dtype: str = "float16"
    verify: bool = True
    verify_examples: int = 8
    verify_tokens: int = 64
    min_agreement: float = 0.99
    system_prompt: str = ""
    consent: str = (
        "The writing this voice was trained on was provided by the person who ran mimetic, who states that "
        "they wrote it or have the consent of its author to train a model on it."
    )

    def __post_init__(self) -> None:
        bad = [f for f in self.formats if f not in EXPORT_FORMATS]
        _check(not bad, f"export.formats: unknown {', '.join(bad)}; choose from {', '.join(EXPORT_FORMATS)}")
        bad = [q for q in self.quantizations if q not in QUANT_TYPES]
        _check(not bad, f"export.quantizations: unknown {', '.join(bad)}; choose from {', '.join(QUANT_TYPES)}")
        _check(self.merged_dtype in ("float16", "bfloat16", "float32"), "export.merged_dtype must be float16, bfloat16 or float32")
        _check(0 < self.min_agreement <= 1, "export.min_agreement must be in (0, 1]")


@dataclass
class VoiceConfig:
    """Everything in a workspace's ``mimetic.toml``: one table per stage."""

    ingest: IngestConfig = field(default_factory=IngestConfig)
    prepare: PrepareConfig = field(default_factory=PrepareConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    generate: GenerateConfig = field(default_factory=GenerateConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    polish: PolishConfig = field(default_factory=PolishConfig)

    def to_dict(self) -> dict[str, Any]:
        """The config as nested dicts, ``None`` values left out (TOML has no null)."""
        return {
            f.name: {k: v for k, v in dataclasses.asdict(getattr(self, f.name)).items() if v is not None}
            for f in dataclasses.fields(self)
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "mimetic.toml") -> "VoiceConfig":
        """Build from nested dicts; unknown tables or keys, and values of the wrong type (a word
        where a number belongs), raise :class:`MimeticError` naming the setting."""
        kinds = {f.name: f.default_factory for f in dataclasses.fields(cls)}  # type: ignore[misc]
        parts = {}
        for name, value in data.items():
            if name not in kinds:
                raise MimeticError(f"Unknown section [{name}] in mimetic.toml.", f"Valid sections: {', '.join(kinds)}.")
            if not isinstance(value, dict):
                raise MimeticError(f"[{name}] in {source} is {value!r}, not a table of settings.",
                                   f"Write it as a section: [{name}] on its own line, its settings below.")
            default = kinds[name]()
            hints = _hints(type(default))
            for key, v in value.items():
                if key in hints and not _fits(v, hints[key]):
                    was = getattr(default, key)
                    raise MimeticError(f"{name}.{key} = {_shown(v)} in {source} is not {_kind(hints[key])}.",
                                       f"Write {name}.{key} as {_kind(hints[key])}"
                                       + (" (or leave it out)." if was is None else f" (the default: {_shown(was)})."))
            parts[name] = replace(default, **value)
        return cls(**parts)

    @classmethod
    def load(cls, path: Path) -> "VoiceConfig":
        """Read a ``mimetic.toml``; a missing file gives the defaults."""
        if not path.exists():
            return cls()
        try:
            return cls.from_dict(tomllib.loads(path.read_text(encoding="utf-8")), str(path))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
            raise MimeticError(f"{path} is damaged: not a valid settings file ({e}).",
                               f"Fix it, or move it aside to get the defaults back (mv {path} {path}.damaged); "
                               "each run keeps its own settings in runs/<id>/config.toml.") from None
        except OSError as e:
            raise MimeticError(f"Cannot read {path}: {e.strerror}.", "Check the voice folder's permissions.") from None

    def dumps(self) -> str:
        import tomli_w

        return tomli_w.dumps(self.to_dict())


def replace(obj: Any, **changes: Any) -> Any:
    """``dataclasses.replace`` that ignores ``None`` values and names unknown keys clearly.

    Raises:
        MimeticError: a key is not a field of ``obj``'s config class.
    """
    names = {f.name for f in dataclasses.fields(obj)}
    unknown = sorted(set(changes) - names)
    if unknown:
        section = type(obj).__name__.replace("Config", "").lower()
        raise MimeticError(
            f"Unknown setting(s) for {section}: {', '.join(unknown)}.",
            f"Valid settings: {', '.join(sorted(names))}.",
        )
    return dataclasses.replace(obj, **{k: v for k, v in changes.items() if v is not None})


def default_learning_rate(hidden_size: int) -> float:
    """Size-aware LoRA learning rate: ``5e-5 · 10 · (2000 / hidden_size) ** 0.781``.

    Source: the LoRA learning-rate rule of Thinking Machines' tinker-cookbook
    (``hyperparam_utils.get_lr``; Schulman et al. 2025, "LoRA Without Regret": the best LoRA
    learning rate is about 10× the full fine-tuning one, which scales with hidden size
    with exponent 0.781 for Llama-family models). Used by one of the writers this project
    grew from. For SmolLM2-135M (hidden size 576) it gives about 1.32e-3.

    Args:
        hidden_size: the model's hidden width (``config.hidden_size``).
    """
    if hidden_size <= 0:
        raise ValueError("hidden_size must be positive")
    return 5e-5 * 10 * (2000 / hidden_size) ** 0.781


def _hints(kind: type) -> dict[str, Any]:
    import typing

    return typing.get_type_hints(kind)


def _fits(value: Any, hint: Any) -> bool:
    """``value`` (as TOML reads it) is of type ``hint``: an ``int`` is a ``float`` too; a bool is
    no number; an unknown kind of hint accepts anything (the checks in ``__post_init__`` remain)."""
    import types
    import typing

    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_fits(value, a) for a in args)
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if origin in (list, tuple):
        return isinstance(value, (list, tuple)) and all(_fits(v, args[0]) for v in value if args and args[0] is not Ellipsis)
    if origin is dict:
        return isinstance(value, dict) and all(_fits(k, args[0]) and _fits(v, args[1]) for k, v in value.items())
    return True


def _shown(value: Any) -> str:
    """``value`` written as in TOML (``"hot"``, ``true``, ``[1, 2]``)."""
    import json

    return json.dumps(value, ensure_ascii=False, default=str)


def _kind(hint: Any) -> str:
    """``hint`` in words: ``a number``, ``a whole number``, ``text``, ``true or false``, …"""
    import typing

    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if typing.get_origin(hint) is not None and len(args) == 1 and typing.get_origin(hint) not in (list, tuple, dict):
        return _kind(args[0])  # X | None
    words = {bool: "true or false", int: "a whole number", float: "a number", str: 'text in quotes ("…")'}
    if hint in words:
        return words[hint]
    if typing.get_origin(hint) in (list, tuple):
        return "a list: [" + ", ".join(['"…"'] * 2) + "]" if args and args[0] is str else "a list"
    if typing.get_origin(hint) is dict:
        return 'a table: { "name" = "…" }'
    return str(hint)


def _known_codec(name: str) -> bool:
    import codecs

    try:
        codecs.lookup(name)
    except LookupError:
        return False
    return True


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise MimeticError(message, "Fix it in mimetic.toml or on the command line.")
