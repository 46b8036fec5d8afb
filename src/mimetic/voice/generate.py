"""Stage 4 — write: generate in the voice, and compare it with the base model side by side.

* :func:`write` continues a text or drafts from a prompt with the trained adapter, streaming
  tokens to a callback (the CLI prints them as they come); with ``best_of`` it drafts several
  and ranks them: by the discriminator of the voice's last evaluation (:func:`discriminator`: the
  draft that reads most like the writer first) or by closeness to the writer's style
  (:func:`style_profile`).
* :func:`compare` runs the base model and the voice on the same prompts with the same seeds
  and settings and writes the pairs as Markdown and as a self-contained HTML page.

A completion-format voice continues the prompt as text; a chat-format voice answers it
through the chat template, with the voice's system prompt (``[generate] system_prompt``, else
the one it was trained with, else :func:`mimetic.text.identity.default_system_prompt`). A voice
trained with briefs (``brief``, ``mixed``) is asked in one of its *modes*
(:func:`mimetic.corpus.briefs.request`): ``write`` from a brief, ``continue`` an opening, or
:func:`rewrite` a draft. Every generation is logged in the workspace's SQLite ``mimetic.db``
(prompt, mode, parameters, output, base model, adapter, time).

The engines that generate (:class:`Voice`, transformers; :class:`GGUFVoice`, llama.cpp) live in
:mod:`mimetic.models.engines` and are re-exported here with :func:`prompt_ids`; every function here
opens one with :func:`mimetic.models.engines.open_voice` (``[generate] engine``, ``auto``: llama.cpp
when it can run the voice, said in one line); the ``[generate]`` settings reach them as
:class:`mimetic.models.sampling.SamplingParams`.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

from mimetic.corpus.briefs import MODES, default_mode, read_briefs, request, split_opening
from mimetic.core.config import GenerateConfig, VoiceConfig
from mimetic.core.events import OnEvent
from mimetic.models.engines import ENGINES, Engine, GGUFVoice, Voice, open_voice, prompt_ids
from mimetic.errors import MimeticError
from mimetic.text.identity import default_system_prompt
from mimetic.models.sampling import SamplingParams
from mimetic.text.discriminator import Discriminator
from mimetic.text.stylometry import StyleProfile
from mimetic.core.workspace import Workspace, atomic_write_json, atomic_write_text


@dataclass
class Generation:
    """One generated text and how it was made."""

    prompt: str
    output: str
    model: str  # "voice" or "base"
    seed: int
    new_tokens: int
    duration_s: float
    style_distance: float | None = None  # best-of drafts only: StyleProfile.distance, lower = closer
    writer_likeness: float | None = None  # best-of drafts ranked by a discriminator: P(writer), higher = closer
    log_id: int | None = None  # its number in mimetic.db (mimetic log, mimetic rate)


def log_generation(workspace: Workspace, voice: Engine, command: str, g: Generation, config: GenerateConfig, **extra: object) -> None:
    """Log ``g`` (written by ``voice`` for ``command``, with ``config`` and ``extra`` as its parameters) in the
    workspace's ``mimetic.db``; sets ``g.log_id``."""
    g.log_id = workspace.log_generation(
        command=command,
        prompt=g.prompt,
        output=g.output,
        params={**asdict(config), "engine": getattr(voice, "engine", config.engine), "model": g.model, **extra},  # the engine that wrote
        base_model=voice.base_model,
        adapter=voice.adapter if g.model == "voice" else None,
        seed=g.seed,
        new_tokens=g.new_tokens,
        duration_s=g.duration_s,
    )


def system_prompt_for(workspace: Workspace, voice: Engine, config: GenerateConfig) -> str:
    """The system prompt of a chat voice: ``config``'s, else the one it was trained with, else the
    default that keeps a small voice's identity; none for a completion voice (unless set)."""
    if voice.format == "completion" or config.system_prompt:
        return config.system_prompt
    own = workspace.load_config().prepare.system_prompt
    return own or (default_system_prompt(workspace.root.name) if voice.format == "chat" else "")


def run_config(workspace: Workspace, run: str | None = None) -> VoiceConfig:
    """The settings ``run`` (default: the published version) was trained with: its
    ``config.toml``, or the voice's for a run from before runs kept one. Raises
    :class:`MimeticError` when there is no such (finished) run."""
    path = workspace.run_dir(run) / "config.toml"
    return VoiceConfig.load(path) if path.exists() else workspace.load_config()


def run_format(workspace: Workspace, run: str | None = None) -> str:
    """The training format of ``run`` (default: the published version): ``completion``,
    ``chat``, ``brief`` or ``mixed``. Raises :class:`MimeticError` when there is no trained run."""
    return run_config(workspace, run).prepare.format


def run_where(workspace: Workspace, run: str | None = None) -> str:
    """The selection of the corpus ``run`` (default: the published version) trained on
    (:mod:`mimetic.core.selection`), ``""`` for all of it."""
    return run_config(workspace, run).train.where


def write(
    workspace: Workspace,
    prompt: str = "",
    config: GenerateConfig | None = None,
    *,
    run: str | None = None,
    continue_from: Path | None = None,
    on_text: Callable[[str], None] | None = None,
    voice: Engine | None = None,
    engine: str | None = None,
    best_of: int = 1,
    mode: str | None = None,
    on_event: OnEvent | None = None,
    rank_by: str = "style",
) -> list[Generation]:
    """Write ``config.num_samples`` texts in the voice from ``prompt`` (or a file's text), or
    draft ``best_of`` and rank them by closeness to the writer's style.

    Args:
        workspace: a workspace with a trained run.
        prompt: the opening to continue, the brief (``mode="write"``), the draft
            (``mode="rewrite"``), or (chat voices) the request.
        mode: ``write``, ``continue`` or ``rewrite`` (:data:`mimetic.corpus.briefs.MODES`); default
            :func:`default_mode` of the voice's format (``continue`` with ``continue_from``). A
            rewrite's draft is reduced to notes first when the voice learned from notes
            (:func:`rewrites_from_notes`).
        config: sampling settings (default: the workspace's ``[generate]``). Sample ``i`` uses
            seed ``config.seed + i``.
        run: run id (default: latest).
        continue_from: a text file whose last 2,000 characters are continued.
        on_text: streaming callback; called with ``"\\n\\n"`` between samples.
        engine: ``auto``, ``llama.cpp`` or ``transformers`` (default ``config.engine``), opened
            by :func:`mimetic.models.engines.open_voice`, which says its choice in one line to
            ``on_event`` (on stderr when none is given); ignored when ``voice`` is given.
        best_of: above 1, draft this many candidates (seeds ``config.seed`` … ``config.seed +
            best_of - 1``, in place of ``config.num_samples``), score each with the writer's
            :class:`~mimetic.text.stylometry.StyleProfile` (:func:`style_profile`, fitted on the
            training text), ``style_distance`` set, and rank them as ``rank_by`` says.
        rank_by: ``style`` (lowest ``style_distance`` first: the default) or ``discriminator``
            (the draft the voice's :func:`discriminator` finds likeliest to be the writer's
            first, ``writer_likeness`` set; needs ``mimetic evaluate`` once). Measured on a
            242k-word Dickens voice, 64 openings × 4 drafts, a fresh classifier as judge
            (``benchmarks/best_of_ranking.py``): style kept the AUC (0.95, the first draft's
            0.95) with fewer invented words (1.19 per 1,000 against 1.48), the discriminator
            did not lower the AUC (0.96) and picked drafts with more (2.27) — so it is not the
            default.

    Returns:
        The generations in seed order (``best_of`` 1), or ranked (``best_of`` > 1). All are
        logged to ``mimetic.db``, best-of drafts with ``best_of``, ``style_distance`` and
        ``writer_likeness`` in their parameters.

    Raises:
        MimeticError: no prompt, unreadable file, no trained run, an unknown engine, llama.cpp
            forced and unable to run the voice,
            ``best_of`` below 1 or combined with ``num_samples`` above 1, too little training
            text for a style profile, a mode the voice was not trained for (the hint says how),
            an unknown ``rank_by``, or ``discriminator`` for a run never evaluated.
    """
    config = config or workspace.load_config().generate
    if continue_from is not None:
        prompt = read_text_file(continue_from, "Check the path given to --continue-from: a text file.")[-2000:] + prompt
        mode = mode or "continue"
    if not prompt.strip():
        raise MimeticError("Nothing to write from: the prompt is empty.", 'Give a prompt: mimetic write "The morning after…"')
    fmt = voice.format if voice is not None else run_format(workspace, run)
    mode = mode or default_mode(fmt)
    asked = request(fmt, mode, prompt, mode == "rewrite" and rewrites_from_notes(workspace))  # checked before a model loads
    engine = engine or config.engine
    if engine not in ENGINES:
        raise MimeticError(f"Unknown engine {engine!r}.", "Use --engine auto, llama.cpp or transformers.")
    if best_of < 1 or (best_of > 1 and config.num_samples > 1):
        raise MimeticError(f"Cannot draft best of {best_of} with {config.num_samples} samples.",
                           "Use --best-of N (N ≥ 2) to rank drafts, or --samples N for N texts in seed order, not both.")
    if rank_by not in RANKINGS:
        raise MimeticError(f"Unknown ranking {rank_by!r}.", "Use --rank-by style or discriminator.")
    scorer = style_profile(workspace, run_where(workspace, run)) if best_of > 1 else None
    judge = discriminator(workspace, run) if best_of > 1 and rank_by != "style" else None
    if rank_by == "discriminator" and best_of > 1 and judge is None:
        raise MimeticError("This version has not been evaluated, so there is no discriminator to rank drafts by.",
                           f"Evaluate it once: mimetic evaluate --workspace {workspace.root} (or use --rank-by style)")
    voice = voice or open_voice(workspace, run, engine=engine, on_event=on_event)
    params = SamplingParams.from_config(config)
    system = system_prompt_for(workspace, voice, config)
    results = []
    count = best_of if scorer else config.num_samples
    together = None  # drafts nobody watches being written: decoded in parallel where the engine can
    if count > 1 and on_text is None:
        t = time.perf_counter()
        together = voice.generate_many(asked, params, [config.seed + i for i in range(count)], system_prompt=system)
        each_s = (time.perf_counter() - t) / count
    for i in range(count):
        if i and on_text:
            on_text("\n\n")
        t = time.perf_counter()
        text, n = together[i] if together else voice.generate(asked, params, config.seed + i, on_text, system_prompt=system)
        g = Generation(prompt, text, "voice", config.seed + i, n, each_s if together else time.perf_counter() - t)
        if scorer:
            g.style_distance = scorer.distance(text)
        if judge is not None:
            g.writer_likeness = float(judge.writer_likeness([text])[0])
        extra = {"best_of": best_of, "style_distance": g.style_distance, "writer_likeness": g.writer_likeness} if scorer else {}
        if mode:
            extra["mode"] = mode
        log_generation(workspace, voice, "write", g, config, **extra)
        results.append(g)
    if judge is not None:
        return sorted(results, key=lambda g: (-(g.writer_likeness or 0.0), g.seed))
    return sorted(results, key=lambda g: (g.style_distance, g.seed)) if scorer else results


RANKINGS = ("style", "discriminator")
"""How ``write --best-of`` ranks drafts (:func:`write`'s ``rank_by``)."""


def discriminator(workspace: Workspace, run: str | None = None) -> Discriminator | None:
    """The classifier of the run's last evaluation, fitted again on its cached passages: the
    writer's real continuations of held-out openings against the voice's samples from the same
    openings (``runs/<id>/evaluation/cache.json``; :class:`mimetic.text.discriminator.Discriminator`,
    well under a second). ``None`` when the run has not been evaluated (or its cache is damaged,
    or holds too few passages)."""
    try:
        samples = json.loads((workspace.run_dir(run) / "evaluation" / "cache.json").read_text(encoding="utf-8"))["samples"]
        return Discriminator([s.get("writer", "") for s in samples], [s.get("voice", "") for s in samples])
    except (OSError, ValueError, KeyError, TypeError, MimeticError):
        return None


def rewrites_from_notes(workspace: Workspace) -> bool:
    """Whether the voice learned to rewrite from :func:`mimetic.corpus.briefs.notes` (no model made
    its paraphrases), so a draft is reduced to notes the same way before rewriting."""
    try:
        made = workspace.data_meta().briefs.get("paraphrases", {})
    except MimeticError:
        return False
    return made.get("notes", 0) > sum(made.values()) / 2


def rewrite(
    workspace: Workspace,
    draft: str,
    config: GenerateConfig | None = None,
    *,
    run: str | None = None,
    on_text: Callable[[str], None] | None = None,
    voice: Engine | None = None,
    engine: str | None = None,
    on_event: OnEvent | None = None,
) -> list[Generation]:
    """Rewrite ``draft`` (the writer's flat draft, or another text) in the voice: :func:`write`
    in ``rewrite`` mode, for voices prepared with ``--format mixed``. When the voice learned to
    rewrite from notes (:func:`rewrites_from_notes`) the draft is reduced to notes first, as its
    training paraphrases were; ``Generation.prompt`` is the draft as given.

    Raises:
        MimeticError: an empty draft, a voice not trained to rewrite (the hint says how), or
            any error of :func:`write`.
    """
    return write(workspace, draft, config, run=run, on_text=on_text, voice=voice, engine=engine, mode="rewrite", on_event=on_event)


def mode_prompts(workspace: Workspace, mode: str, n: int = 5) -> list[dict[str, str]]:
    """Held-out requests for ``mode``, evenly spread over the held-out split: ``write`` gives the
    held-out passages' briefs, ``continue`` their openings, ``rewrite`` their paraphrases
    (``data/briefs.jsonl``); each dict has ``prompt`` (what the voice is asked), ``passage``
    (what the writer wrote: the whole passage, or the rest after the opening) and ``doc_id``.
    The voice never trained on any of them.

    Raises:
        MimeticError: no examples yet, unknown mode, or (``write``, ``rewrite``) no briefs.
    """
    from mimetic.corpus.briefs import BRIEFS_FILE, passage_hash
    from mimetic.corpus.prepare import load_split

    if mode not in MODES:
        raise MimeticError(f"Unknown mode {mode!r}.", f"Use one of: {', '.join(MODES)}.")
    rows = load_split(workspace, "held_out")
    briefs = read_briefs(workspace.data_dir / BRIEFS_FILE)
    if mode != "continue" and not briefs:
        raise MimeticError("This voice has no briefs to ask it with.", f"Make them: mimetic prepare --format mixed --workspace {workspace.root}")
    out = []
    for i in range(len(rows)):
        text = rows[i]["text"]
        if mode == "continue":
            opening, rest = split_opening(text)
            if rest:
                out.append({"prompt": opening, "passage": rest, "doc_id": rows[i]["doc_id"]})
            continue
        b = briefs.get(passage_hash(text))
        got = b and (b.brief if mode == "write" else b.paraphrase)
        if got:
            out.append({"prompt": got, "passage": text, "doc_id": rows[i]["doc_id"]})
    if len(out) > n:
        step = len(out) / n
        out = [out[int(k * step)] for k in range(n)]
    return out


STYLE_PROFILE_FILE = "style_profile.json"


def style_profile(workspace: Workspace, where: str = "") -> StyleProfile:
    """The writer's :class:`~mimetic.text.stylometry.StyleProfile`, fitted on the training split's
    text (150-word passages, 200 character 3-grams; of a version's selection ``where``) and
    cached in ``data/style_profile.json``.

    The cache is keyed by a SHA-256 of ``data/meta.json``, ``corpus/manifest.json`` and the
    selection, so it is refitted after a new ``ingest`` or ``prepare`` and read (milliseconds)
    otherwise.

    Raises:
        MimeticError: no training examples yet, or too little training text (fewer than two
            150-word passages).
    """
    from mimetic.corpus.prepare import load_split

    meta = workspace.data_dir / "meta.json"
    workspace.data_meta()  # a clear error when there are no examples yet
    parts = [meta.read_bytes()] + ([workspace.manifest_path.read_bytes()] if workspace.manifest_path.exists() else [])
    key = hashlib.sha256(b"\0".join(parts + [where.encode()])).hexdigest()[:16]
    path = workspace.data_dir / STYLE_PROFILE_FILE
    try:
        cached = json.loads(path.read_text(encoding="utf-8"))
        if cached.get("key") == key:
            return StyleProfile.from_dict(cached["profile"])
    except (OSError, ValueError, KeyError, TypeError):
        pass  # missing or damaged: fit again
    try:
        profile = StyleProfile.fit(load_split(workspace, "train", where)["text"])
    except ValueError as e:
        raise MimeticError(f"Too little training text to rank drafts by your style ({e}).",
                           "Add writing and run mimetic prepare again, or write without --best-of.") from None
    atomic_write_json(path, {"key": key, "profile": profile.to_dict()})
    return profile


def read_text_file(path: Path | str, fix: str) -> str:
    """The text of a file the writer gives (a draft to continue, a file of prompts), decoded as
    ingest decodes files (:func:`mimetic.text.readers.decode_bytes`: a byte-order mark, UTF-8, UTF-16,
    the Western 8-bit code pages).

    Raises:
        MimeticError: the file cannot be read, or is binary (``fix`` says what to give instead).
    """
    from mimetic.text.readers import ReadError, decode_bytes

    try:
        raw = Path(path).expanduser().read_bytes()
    except OSError as e:
        raise MimeticError(f"Cannot read {path}: {e.strerror}.", fix) from e
    try:
        return decode_bytes(raw).text
    except ReadError as e:
        raise MimeticError(f"{path} is not a text file mimetic can read ({e}).", fix) from e


def read_prompts(path: Path) -> list[str]:
    """Prompts from a file: one per paragraph (blank-line separated); ``#`` lines are comments.

    Raises:
        MimeticError: unreadable file or no prompts in it.
    """
    text = read_text_file(path, "Give a text file with one prompt per paragraph.")
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    prompts = [p.strip() for p in "\n".join(lines).split("\n\n") if p.strip()]
    if not prompts:
        raise MimeticError(f"No prompts in {path}.", "Write one prompt per paragraph, separated by blank lines.")
    return prompts


@dataclass
class Comparison:
    """Base and voice outputs for the same prompts, and where they were written."""

    pairs: list[tuple[Generation, Generation]]
    markdown: Path
    html: Path


def compare(
    workspace: Workspace,
    prompts: list[str],
    config: GenerateConfig | None = None,
    *,
    run: str | None = None,
    voice: Engine | None = None,
    on_pair: Callable[[int, Generation, Generation], None] | None = None,
    mode: str | None = None,
    on_text: Callable[[int, str, str], None] | None = None,
    on_event: OnEvent | None = None,
) -> Comparison:
    """Generate from the base model and from the voice on each prompt, same seed and settings.

    ``mode`` (``write``, ``continue``, ``rewrite``; default :func:`default_mode`) asks both
    models in that mode (:func:`mimetic.corpus.briefs.request`): the base model gets exactly the
    request the voice gets. Writes ``compare/<time>.md`` and ``compare/<time>.html``
    (self-contained, side by side). ``on_text(i, model, text)`` streams each text as it is
    written (``model``: ``base``, then ``voice``), for the app's writing desk. The engine is
    ``config.engine``'s (:func:`mimetic.models.engines.open_voice`, its one line to ``on_event``),
    unless ``voice`` is given.

    Raises:
        MimeticError: no prompts, no trained run, a mode the voice was not trained for.
    """
    if not prompts:
        raise MimeticError("No prompts to compare on.", "Pass --prompts FILE with one prompt per paragraph.")
    config = config or workspace.load_config().generate
    fmt = voice.format if voice is not None else run_format(workspace, run)
    mode = mode or default_mode(fmt)
    from_notes = mode == "rewrite" and rewrites_from_notes(workspace)
    asked = [request(fmt, mode, p, from_notes) for p in prompts]
    voice = voice or open_voice(workspace, run, engine=config.engine, on_event=on_event)
    params = SamplingParams.from_config(config)
    system = system_prompt_for(workspace, voice, config)
    pairs = []
    for i, prompt in enumerate(prompts):
        seed = config.seed + i
        t = time.perf_counter()
        stream = (lambda model: (lambda chunk: on_text(i, model, chunk))) if on_text else (lambda model: None)  # noqa: E731
        with voice.base():
            text, n = voice.generate(asked[i], params, seed, stream("base"), system_prompt=system)
        base = Generation(prompt, text, "base", seed, n, time.perf_counter() - t)
        t = time.perf_counter()
        text, n = voice.generate(asked[i], params, seed, stream("voice"), system_prompt=system)
        tuned = Generation(prompt, text, "voice", seed, n, time.perf_counter() - t)
        for g in (base, tuned):
            log_generation(workspace, voice, "compare", g, config, **({"mode": mode} if mode else {}))
        pairs.append((base, tuned))
        if on_pair:
            on_pair(i, base, tuned)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    md_path, html_path = workspace.compare_dir / f"{stamp}.md", workspace.compare_dir / f"{stamp}.html"
    shown = mode if fmt in ("brief", "mixed") else None  # a completion or chat voice has one way to be asked
    atomic_write_text(md_path, comparison_markdown(pairs, voice, config, shown))
    atomic_write_text(html_path, comparison_html(pairs, voice, config, shown))
    return Comparison(pairs, md_path, html_path)


_MODE_TITLE = {None: "Prompt", "continue": "Opening", "write": "Brief", "rewrite": "Draft"}


def _settings_line(voice: Voice, config: GenerateConfig, mode: str | None = None) -> str:
    return (
        (f"mode **{mode}** · " if mode else "")
        + f"base model `{voice.base_model}` · adapter `{voice.adapter}` · temperature {config.temperature} · "
        f"top-p {config.top_p} · min-p {config.min_p} · max new tokens {config.max_new_tokens}"
    )


def comparison_markdown(pairs: list[tuple[Generation, Generation]], voice: Voice, config: GenerateConfig,
                        mode: str | None = None) -> str:
    """The comparison as Markdown: one section per prompt (brief, opening or draft), base then voice."""
    out = ["# Base model vs your voice", "", _settings_line(voice, config, mode), ""]
    for i, (base, tuned) in enumerate(pairs, 1):
        out += [f"## {_MODE_TITLE.get(mode, 'Prompt')} {i} (seed {base.seed})", "", "> " + base.prompt.replace("\n", "\n> "), "",
                "**Base model**", "", base.output.strip(), "", "**Your voice**", "", tuned.output.strip(), ""]
    return "\n".join(out)


def comparison_html(pairs: list[tuple[Generation, Generation]], voice: Voice, config: GenerateConfig,
                    mode: str | None = None) -> str:
    """The comparison as one self-contained HTML page, base and voice in two columns
    (``voice/templates/compare.html``, Jinja2 with autoescaping)."""
    from jinja2 import Environment, PackageLoader

    page = Environment(loader=PackageLoader("mimetic.voice"), autoescape=True).get_template("compare.html")
    return page.render(pairs=pairs, title=_MODE_TITLE.get(mode, "Prompt"), settings=_settings_line(voice, config, mode))


def held_out_prompts(workspace: Workspace, n: int = 5, words: int = 40) -> list[str]:
    """Openings (first ``words`` words) of ``n`` held-out examples: fair prompts for a comparison,
    since the voice never trained on them."""
    from mimetic.corpus.prepare import load_split

    rows = load_split(workspace, "held_out")
    step = max(1, len(rows) // n)
    prompts = []
    for i in range(0, len(rows), step):
        text = " ".join(rows[i]["text"].split()[:words])
        if text:
            prompts.append(text)
        if len(prompts) == n:
            break
    return prompts


def feedback_examples(workspace: Workspace, run: str | None = None) -> dict[str, Any]:
    """The writer's marks (``mimetic rate``, the app) as training examples for a preference stage
    on ``run`` (default: the published version), in that run's tokens.

    Each marked text's prompt is rebuilt as the voice saw it when it wrote the text (its format's
    template, the logged mode and system prompt: :func:`mimetic.corpus.briefs.request`,
    :func:`mimetic.models.engines.prompt_ids`). A pick among drafts (``best`` over ``worse``) gives one
    DPO pair per draft it beat; a kept or discarded text gives one KTO example. Texts the base
    model wrote in a comparison are left out (the voice did not write them).

    Returns:
        ``{"pairs": [{prompt, chosen, rejected, marks}], "singles": [{prompt, completion,
        desirable, marks}], "marks": count used, "skipped": count left out}``: token id lists,
        ``marks`` the mark ids behind each example.

    Raises:
        MimeticError: no trained run.
    """
    from mimetic.text.identity import voice_system_prompt
    from mimetic.core.logdb import marks as read_marks
    from mimetic.models.loading import load_tokenizer

    run_dir = workspace.run_dir(run)
    vc = VoiceConfig.load(run_dir / "config.toml")
    fmt, tokenizer = vc.prepare.format, load_tokenizer(vc.train.base_model)
    notes = rewrites_from_notes(workspace)
    rows = read_marks(workspace.db_path)

    def tokens(m: dict[str, Any]) -> tuple[list[int], list[int]] | None:
        params = json.loads(m["params"] or "{}")
        if params.get("model", "voice") != "voice":
            return None
        mode = params.get("mode") or default_mode(fmt)
        try:
            asked = request(fmt, mode, m["prompt"], mode == "rewrite" and notes)
        except MimeticError:  # a mode this run did not learn: its prompt cannot be rebuilt
            return None
        system = params.get("system_prompt") or voice_system_prompt(vc, workspace.root.name)
        completion = list(tokenizer(m["output"], add_special_tokens=False)["input_ids"])
        return prompt_ids(tokenizer, fmt, asked, system), completion

    pairs, singles, used, skipped = [], [], set(), 0
    groups: dict[str, list[dict[str, Any]]] = {}
    for m in rows:
        if m["group_id"]:
            groups.setdefault(m["group_id"], []).append(m)
            continue
        made = tokens(m)
        if made is None or not made[1]:
            skipped += 1
            continue
        singles.append({"prompt": made[0], "completion": made[1], "desirable": m["label"] == "keep", "marks": [m["id"]]})
        used.add(m["id"])
    for group in groups.values():
        best = [m for m in group if m["label"] == "best"]
        made_best = tokens(best[0]) if best else None
        for worse in (m for m in group if m["label"] == "worse"):
            made_worse = tokens(worse)
            if made_best is None or made_worse is None or made_best[0] != made_worse[0]:
                skipped += 1  # drafts of different prompts are not a pick among drafts
                continue
            pairs.append({"prompt": made_best[0], "chosen": made_best[1], "rejected": made_worse[1],
                          "marks": [best[0]["id"], worse["id"]]})
            used.update((best[0]["id"], worse["id"]))
    return {"pairs": pairs, "singles": singles, "marks": len(used), "skipped": skipped}


@dataclass
class Sources:
    """Where a generated passage comes from, in the writer's own archive.

    Attributes:
        nearest: the writer's paragraphs nearest to it (:func:`mimetic.text.archive.nearest`, BM25
            over its distinctive words), with file, date and paragraph.
        overlap: its longest verbatim overlap with the writer's corpus
            (:class:`mimetic.text.memorization.Overlap`: tokens, characters, the passage, the document).
    """

    nearest: list[Any]
    overlap: Any


def sources(workspace: Workspace, texts: list[str], k: int = 3) -> list[Sources]:
    """For each of ``texts``, the writer's ``k`` passages nearest to it and its longest verbatim
    overlap with the corpus.

    The overlap is measured against the whole cleaned corpus (held-out documents too), through the
    suffix-array index the memorization audit uses, built once here for all the texts (well under
    a second for a 300k-word corpus).

    Raises:
        MimeticError: nothing ingested, or an archive from an earlier mimetic (ingest again).
    """
    from mimetic.text.archive import nearest
    from mimetic.corpus.ingest import load_corpus
    from mimetic.text.memorization import TrainingIndex

    docs = load_corpus(workspace)
    index = TrainingIndex([(d["doc_id"], "\n\n".join(d["paragraphs"])) for d in docs])
    return [Sources(nearest(workspace.corpus_dir, text, k), index.overlap(text)) for text in texts]


__all__ = ["Voice", "GGUFVoice", "prompt_ids", "write", "discriminator", "RANKINGS", "log_generation", "system_prompt_for", "sources", "Sources", "feedback_examples", "rewrite", "mode_prompts", "default_mode", "run_format", "style_profile", "compare", "read_prompts", "held_out_prompts", "Generation", "Comparison"]
