"""The ``mimetic`` command: a thin layer over the Python API, one command per stage.

Errors a writer can fix are printed as two lines (what happened, what to do) with no
traceback; anything unexpected is summarised in one line and its traceback saved to
``mimetic-error.log`` in the workspace.
"""

from __future__ import annotations

import errno
import functools
import json
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from mimetic.core import config as cfg
from mimetic.errors import MimeticError, TrainingInterrupted
from mimetic.frontends.render import CtrlC, RichEvents
from mimetic.core.workspace import Workspace

app = typer.Typer(
    help="Turn your own writing into a small language model that writes in your voice — privately, on this machine.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()
err = Console(stderr=True)

WorkspaceOpt = typer.Option(
    Path(os.environ.get("MIMETIC_WORKSPACE", "voice")), "--workspace", "-w", help="Folder that holds this voice."
)


def _let_the_main_process_speak(seconds: float = 5.0) -> None:
    """Under a launcher (accelerate, torchrun) only the main process prints, and the launcher stops
    every process as soon as one exits with an error: a silent process that meets the same error
    waits a moment, so that the main one has printed the message before it is stopped."""
    from mimetic.models.distributed import is_main_process

    if not is_main_process():
        time.sleep(seconds)


def _friendly(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Run a command, turning errors into short messages and exit status 1."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except TrainingInterrupted as e:
            err.print(f"[yellow]{e.message}[/]")
            err.print(e.hint or "")
            _let_the_main_process_speak()
            raise typer.Exit(130) from None
        except MimeticError as e:
            err.print(f"[bold red]Error:[/] {e.message}")
            if e.hint:
                err.print(f"[dim]→[/] {e.hint}")
            _let_the_main_process_speak()
            raise typer.Exit(1) from None
        except KeyboardInterrupt:
            err.print("[yellow]Stopped.[/] Nothing was half-written; run the same command again to redo this step.")
            raise typer.Exit(130) from None
        except OSError as e:
            if e.errno == errno.ENOSPC:
                err.print("[bold red]Error:[/] the disk is full. Free some space and run the same command again.")
            else:
                err.print(f"[bold red]Error:[/] {e.strerror or e}: {getattr(e, 'filename', '') or ''}")
            raise typer.Exit(1) from None
        except (typer.Exit, typer.Abort, SystemExit):
            raise
        except Exception as e:  # noqa: BLE001 - last resort: never show a raw traceback
            ws = kwargs.get("workspace")
            log = Path(ws if ws else ".").expanduser() / "mimetic-error.log"
            try:
                log.parent.mkdir(parents=True, exist_ok=True)
                log.write_text(traceback.format_exc(), encoding="utf-8")
                where = f" Details were saved to {log}."
            except OSError:
                where = ""
            err.print(f"[bold red]Unexpected error:[/] {type(e).__name__}: {e}.{where}")
            raise typer.Exit(2) from None

    return wrapper


def _words(n: int) -> str:
    return f"{n:,}"


def _ingest_report(result: Any) -> None:
    rep = result.report
    t = Table(title="Your corpus", show_edge=False)
    for col, just in (("format", "left"), ("documents", "right"), ("words", "right")):
        t.add_column(col, justify=just)  # type: ignore[arg-type]
    for fmt, row in rep["by_format"].items():
        t.add_row(fmt, f"{row['documents']:,}", _words(row["words"]))
    t.add_row("[bold]kept", f"[bold]{rep['documents']:,}", f"[bold]{_words(rep['words'])}")
    console.print(t)
    from mimetic.corpus.sizes import size_verdict

    size = size_verdict(rep["words"])
    if size.sentence:
        console.print(("[yellow]Little writing[/]: " if size.band == "too little" else "How much writing: ") + escape(size.sentence))
    if result.reused:
        console.print(f"[dim]{result.reused:,} unchanged files reused from the last ingest, {result.read:,} read.[/]")
    if result.writer:
        console.print(f"Mail and chat: kept what [bold]{escape(result.writer)}[/] wrote (change with --author).")
    if rep.get("mixed_languages"):
        langs = ", ".join(f"{k} {v:,}" for k, v in rep["by_language"].items())
        console.print(f"[yellow]Several languages[/] (words: {langs}); a small model learns each from less text.")
    if rep["words_removed"]:
        r = Table(title="Removed", show_edge=False)
        r.add_column("reason")
        r.add_column("words", justify="right")
        for why, n in rep["words_removed"].items():
            r.add_row(why, _words(n))
        console.print(r)
    if rep["redacted"]:
        console.print("Redacted: " + ", ".join(f"{n:,} {k}" for k, n in rep["redacted"].items()))
    if result.skipped:
        s = Table(title=f"Skipped ({len(result.skipped)})", show_edge=False)
        s.add_column("file", overflow="fold")
        s.add_column("reason", overflow="fold")

        def short(f: Any) -> str:
            name = "/".join(Path(f.path.split("!")[0]).parts[-2:]) + ("!" + f.path.split("!", 1)[1] if "!" in f.path else "")
            return escape(name + (f" ({f.part})" if f.part else ""))

        problems = result.problems
        for f in problems[:20]:
            s.add_row(short(f), "[red]" + escape(f.skipped or ""))
        if len(problems) > 20:
            s.add_row(f"… and {len(problems) - 20} more that could not be read", "see corpus/report.html")
        from mimetic.corpus.ingest import skip_kind

        groups: dict[str, list[Any]] = {}
        for f in result.skipped:
            if not f.problem:
                groups.setdefault(skip_kind(f.skipped), []).append(f)
        for why, fs in sorted(groups.items(), key=lambda kv: -len(kv[1])):
            example = escape(fs[0].skipped or "")
            s.add_row(short(fs[0]) + (f" [dim]and {len(fs) - 1} more[/]" if len(fs) > 1 else ""), example)
        console.print(s)
    if result.names:
        top = ", ".join(f"{n['name']} {n['count']}" for n in result.names[:12])
        console.print(f"Names the model will learn (mentions): {escape(top)}. [dim]Full list: corpus/names.json; "
                      "give aliases with --alias or leave them out with --exclude-name.[/]")
    console.print(f"Every removal and why: {result.corpus_dir / 'review.json'} · report: {result.corpus_dir / 'report.html'}")


def _alias_map(aliases: list[str] | None) -> dict[str, str] | None:
    if not aliases:
        return None
    out = {}
    for a in aliases:
        if "=" not in a or not a.split("=", 1)[0].strip():
            raise MimeticError(f"--alias {a!r} is not NAME=REPLACEMENT.", 'Example: --alias "Anna Berg=A."')
        k, v = a.split("=", 1)
        out[k.strip()] = v.strip()
    return out


def _csv(values: list[str] | None) -> list[str] | None:
    if not values:
        return None
    return [v.strip() for item in values for v in item.split(",") if v.strip()]


@app.command()
@_friendly
def ingest(
    paths: list[Path] = typer.Argument(
        ..., help="Files or folders of your writing: txt, md, gmi, html, docx, odt, rtf, epub, pdf, eml, mbox, json, zip."
    ),
    workspace: Path = WorkspaceOpt,
    author: Optional[list[str]] = typer.Option(None, "--author", help="Your e-mail address or name: mail and chat keep only what you wrote (repeatable)."),
    redact: Optional[list[str]] = typer.Option(None, help="Replace personal data with placeholders: emails,urls,phones,ips,cards."),
    alias: Optional[list[str]] = typer.Option(None, help='Replace a name everywhere: "Real Name=Other" (repeatable).'),
    exclude_name: Optional[list[str]] = typer.Option(None, help="Leave out paragraphs that mention this name (repeatable)."),
    keep: Optional[list[str]] = typer.Option(None, help="Never remove files matching this pattern as duplicates or boilerplate (repeatable)."),
    near_duplicate_threshold: Optional[float] = typer.Option(None, help="Similarity (0–1) from which texts count as near duplicates (default 0.8)."),
    min_words: Optional[int] = typer.Option(None, help="Skip documents shorter than this many words."),
    encoding: Optional[str] = typer.Option(None, help="Text encoding of .txt and .md files when detection gets it wrong: cp1252, latin-1, mac_roman, …"),
    replace: bool = typer.Option(False, "--replace", help="Read only the folders named here: the writing read into the voice before leaves it (without this, named folders are added)."),
) -> None:
    """Read and clean your writing into the voice's corpus (your files are never changed).

    Folders are added: the writing the voice already has is read again with them (--replace
    to start over from the named folders only). Symbolic links leading outside the named
    folders are listed, never followed.

    Exit status 0 when every file was read, 3 when some could not be (they are listed; the
    rest of the corpus is ready).
    """
    from mimetic.corpus.ingest import ingest as run

    ws = Workspace.open(workspace)
    vc = ws.load_config()
    vc.ingest = cfg.replace(
        vc.ingest, min_words=min_words, authors=author or None, redact=_csv(redact), aliases=_alias_map(alias),
        exclude_names=exclude_name or None, keep=keep or None, near_duplicate_threshold=near_duplicate_threshold,
        encoding=encoding,
    )
    with RichEvents(console) as show:
        result = run(paths, ws, vc.ingest, on_event=show, replace=replace)
    _ingest_report(result)
    if replace:
        console.print(f"The voice's writing is now only: {escape(', '.join(result.sources))}.")
    console.print(f"Cleaned documents and provenance: {ws.corpus_dir}")
    if result.problems:
        err.print(f"[yellow]{len(result.problems)} file(s) could not be read[/] (listed above, and in corpus/report.html).")
        raise typer.Exit(3)


@app.command()
@_friendly
def prepare(
    workspace: Path = WorkspaceOpt,
    base_model: Optional[str] = typer.Option(None, help="Model whose tokenizer to use (default: the voice's)."),
    format: Optional[str] = typer.Option(None, "--format", help="completion (default: continue your text), chat, brief (write from a brief of each passage) or mixed (write, continue and rewrite)."),
    max_tokens: Optional[int] = typer.Option(None, help="Largest training example, in tokens (default 512)."),
    held_out: Optional[float] = typer.Option(None, help="Share of documents held out (default 0.1)."),
    seed: Optional[int] = typer.Option(None, help="Seed of the held-out split."),
    brief_model: Optional[str] = typer.Option(None, help="Who writes the briefs: auto, base, extractive, an OpenAI-compatible server on this machine (http://127.0.0.1:11434/v1), a .gguf file or a model folder."),
    brief_model_name: Optional[str] = typer.Option(None, help="The model to ask on that server (e.g. qwen2.5:7b; default: the first it lists)."),
    preset: Optional[str] = typer.Option(None, help="A setup for your hardware (see `mimetic presets`); its settings are saved in mimetic.toml."),
) -> None:
    """Cut the corpus into training examples and a held-out split.

    With --format brief or mixed, a brief (and for mixed a plain paraphrase) of every passage is
    made first and kept in data/briefs.jsonl: edit it and run prepare again to train on your
    edits."""
    from mimetic.pipeline import choose_settings
    from mimetic.corpus.prepare import prepare as run

    ws = Workspace.open(workspace, create=False)
    changes = dict(format=format, max_tokens=max_tokens, held_out_fraction=held_out, seed=seed,
                   brief_model=brief_model, brief_model_name=brief_model_name)
    with RichEvents(console) as show:
        vc, _ = choose_settings(ws, preset=preset, base_model=base_model, prepare_changes=changes, on_event=show)
    pc, base_model = vc.prepare, vc.train.base_model
    if pc.format in ("brief", "mixed"):
        from urllib.parse import urlparse

        host = urlparse(pc.brief_model).hostname if pc.brief_model.startswith(("http://", "https://")) else None
        if host and host not in ("127.0.0.1", "localhost", "::1"):
            err.print(f"[yellow]Your passages (held-out ones too) will be sent to {escape(host)} to be described.[/] "
                      "Use a server on this machine (127.0.0.1) to keep them here.")
        with RichEvents(console) as show:
            r = run(ws, pc, base_model, on_event=show)
    else:
        with console.status("Preparing training examples…"):
            r = run(ws, pc, base_model)
    _prepare_report(r)


def _prepare_report(r: Any) -> None:
    t = Table(title=f"Examples ({r.meta['config']['format']}, held-out split by {r.split_mode})", show_edge=False)
    for col in ("split", "examples", "tokens"):
        t.add_column(col, justify="right" if col != "split" else "left")
    t.add_row("training", _words(r.train_examples), _words(r.train_tokens))
    t.add_row("held out", _words(r.held_out_examples), _words(r.held_out_tokens))
    console.print(t)
    briefs = r.meta.get("briefs") or {}
    if briefs:
        made = ", ".join(f"{n:,} by {k}" for k, n in briefs["sources"].items())
        modes = ", ".join(f"{n:,} {k}" for k, n in briefs["modes"]["train"].items())
        console.print(f"Briefs: {made}. Training examples: {modes}.")
        console.print("[dim]Review or edit them in data/briefs.jsonl, then run prepare again to use your edits.[/]")


def _train_summary(r: Any) -> None:
    t = Table(title=f"Run {r.run_id}", show_edge=False, show_header=False)
    t.add_column()
    t.add_column(justify="right")
    t.add_row("held-out NLL, base model", f"{r.base_nll:.3f} nats/token")
    t.add_row("held-out NLL, your voice", f"{r.best_nll:.3f} (step {r.best_step})")
    t.add_row("change", f"{-100 * r.nll_drop:+.1f}%")
    t.add_row("stopped because", r.stopped_because)
    t.add_row("steps", str(r.final_step))
    t.add_row("training speed", f"{r.tokens_per_s:,.0f} tokens/s")
    t.add_row("time", f"{r.elapsed_s / 60:.1f} min"
              + (f" ({100 * r.eval_s / max(1e-9, r.elapsed_s):.0f}% of it measuring)" if r.eval_s is not None else ""))
    t.add_row("peak memory", f"{r.peak_rss_mb / 1024:.1f} GiB")
    console.print(t)
    console.print(f"Adapter: {r.run_dir / 'adapter'}   Loss plot: {r.run_dir / 'loss.png'}")


@app.command()
@_friendly
def train(
    workspace: Path = WorkspaceOpt,
    resume: Optional[str] = typer.Option(None, help="Continue a stopped run: its id, or 'latest'."),
    base_model: Optional[str] = typer.Option(None, help="Base model (must match prepare)."),
    epochs: Optional[float] = typer.Option(None, help="Passes over the training data (default 2, within the time budget)."),
    max_steps: Optional[int] = typer.Option(None, help="Stop after this many optimizer steps."),
    time_budget_min: Optional[float] = typer.Option(None, "--time-budget", help="Stop after this many minutes (evaluation included)."),
    learning_rate: Optional[float] = typer.Option(None, "--lr", help="Learning rate (default: size-aware rule)."),
    lora_r: Optional[int] = typer.Option(None, help="LoRA rank (default 16)."),
    lora_alpha: Optional[int] = typer.Option(None, help="LoRA alpha (default 32)."),
    batch_size: Optional[int] = typer.Option(None, help="Examples per micro-batch (default 4)."),
    grad_accum: Optional[int] = typer.Option(None, help="Micro-batches per optimizer step (default 1)."),
    eval_every: Optional[int] = typer.Option(None, help="Steps between held-out evaluations."),
    patience: Optional[int] = typer.Option(None, help="Evaluations without improvement before stopping early."),
    device: Optional[str] = typer.Option(None, help="auto, cpu, cuda or mps."),
    load_in_4bit: bool = typer.Option(False, "--4bit", help="QLoRA: load the base model in 4-bit (CUDA only)."),
    packing: Optional[bool] = typer.Option(None, "--packing/--no-packing", help="Pack whole examples into full rows (less padding)."),
    plan_only: bool = typer.Option(False, "--plan", help="Only predict memory and time from a short warm-up, then stop."),
    base_weights: Optional[str] = typer.Option(None, help="Store the frozen base weights as fp32 or bf16 (half the memory; bf16 compute)."),
    compile_model: Optional[bool] = typer.Option(None, "--compile/--no-compile", help="torch.compile the training steps: minutes to compile; measured slower after on a CPU."),
    preset: Optional[str] = typer.Option(None, help="A setup for your hardware (see `mimetic presets`); prepare with the same preset first."),
    from_feedback: bool = typer.Option(False, "--from-feedback", help="Learn from your marks (mimetic rate) on top of the latest run: the same as mimetic polish --from-feedback."),
    processes: int = typer.Option(1, min=1, help="Train with this many processes through accelerate (GPUs, or CPU sockets); each takes --batch-size examples per step."),
    accelerate_config: Optional[Path] = typer.Option(None, help="An accelerate config file (FSDP, DeepSpeed: see configs/accelerate/ in mimetic's repository)."),
    version: Optional[str] = typer.Option(None, "--version", help="Name the version this run makes (e.g. 2014-2016)."),
    where: Optional[str] = typer.Option(None, help='Train on part of your writing: "date < 2017", "folder = essays", "format = email" (with --version).'),
    publish: Optional[bool] = typer.Option(None, "--publish/--no-publish", help="Make this run the voice write, export and the app use when it finishes (default: yes for an unnamed run, no for a named version)."),
) -> None:
    """Fine-tune a LoRA adapter on your writing, watching held-out NLL.

    With --resume only the run's runtime options may be given (--device, --time-budget,
    --base-weights, --compile); a run's other settings are frozen when it starts.
    --version NAME --where "date < 2017" trains a version on part of your writing."""
    from mimetic.models.distributed import is_main_process, launched_processes, relaunch
    from mimetic.training.sft import plan
    from mimetic.training.sft import train as run

    if from_feedback:
        if where:
            raise MimeticError("A feedback run learns on the selection of the version it starts from.",
                               "Leave out --where: mimetic train --from-feedback [--version NAME]")
        return polish(run=None, workspace=workspace, resume=None, pairs=None, beta=None, learning_rate=learning_rate, epochs=epochs,
                      max_steps=max_steps, batch_size=batch_size, device=device, from_feedback=True,
                      version=version, publish=publish)

    if (processes > 1 or accelerate_config) and launched_processes() == 1 and not plan_only:
        console.print(f"[dim]Starting {processes} training processes through accelerate…[/]")
        raise typer.Exit(relaunch(processes, accelerate_config, sys.argv[1:]))
    ws = Workspace.open(workspace, create=False)
    runtime = dict(device=device, time_budget_min=time_budget_min, base_weights=base_weights, compile=compile_model)
    tc = None
    if resume:
        from mimetic.training.session import check_frozen

        check_frozen({"base-model": base_model, "epochs": epochs, "max-steps": max_steps, "lr": learning_rate,
                      "lora-r": lora_r, "lora-alpha": lora_alpha, "batch-size": batch_size, "grad-accum": grad_accum,
                      "eval-every": eval_every, "patience": patience, "4bit": load_in_4bit or None, "packing": packing,
                      "preset": preset, "version": version, "where": where})
    else:
        from mimetic.pipeline import choose_settings
        from mimetic.training.session import check_data_for, check_version

        with RichEvents(console) as show:
            vc, _ = choose_settings(
                ws, preset=preset, base_model=base_model, on_event=show, always_recommend=plan_only, save=False,
                epochs=epochs, max_steps=max_steps, learning_rate=learning_rate, lora_r=lora_r, lora_alpha=lora_alpha,
                batch_size=batch_size, grad_accum=grad_accum, eval_every=eval_every, patience=patience,
                load_in_4bit=load_in_4bit or None, packing=packing, **runtime,
            )
        if preset:
            check_data_for(ws, vc.train.base_model, format=vc.prepare.format, preset=preset)
        tc = cfg.replace(vc.train, version=version, where=where)
        if not plan_only:
            check_version(ws, tc)
            if where:
                from mimetic.core.selection import parse as parse_where

                console.print(f"Version {tc.version}: {parse_where(where).describe(ws.read_manifest().files)} ({where}).")
    if plan_only:
        with console.status(f"Measuring a short warm-up of {tc.base_model}…"):
            p = plan(ws, tc)
        console.print(p.summary())
        console.print(f"[dim]{p.steps_per_epoch} steps per epoch, {p.evals_per_epoch} held-out evaluations per epoch.[/]")
        if not p.fits:
            raise MimeticError("This run will not fit in memory.", p.advice)
        return
    console.print("Measuring the base model on your held-out writing, then training (Ctrl-C saves and stops)…")
    with CtrlC() as ctrl_c, RichEvents(console, quiet=not is_main_process()) as show:
        r = run(ws, tc, resume=(True if resume == "latest" else resume) or None, runtime=runtime if resume else None,
                on_event=show, should_stop=ctrl_c, publish=publish)
    _train_summary(r)
    _published_line(ws, r.run_id)


def _published_line(ws: Workspace, run_id: str) -> None:
    """Say whether the finished run is now the voice, and how to publish it if not."""
    names = ws.names_of(run_id)
    label = f"version {names[0]} (run {run_id})" if names else f"run {run_id}"
    if ws.published_run() == run_id:
        console.print(f"Published: {label} is now the voice that write, export and the app use.")
    else:
        console.print(f"Kept as {label}; the published voice is still {ws.published_run()}. "
                      f"Publish it with: mimetic publish {names[0] if names else run_id} --workspace {ws.root}")


def _gen_config(ws: Workspace, **overrides: Any) -> cfg.GenerateConfig:
    return cfg.replace(ws.load_config().generate, **overrides)


_GEN = cfg.GenerateConfig()
"""The defaults ``write --help`` states: the settings' own, never a copy of them."""


@app.command()
@_friendly
def write(
    prompt: str = typer.Argument("", help="The opening to continue (or, for a chat voice, the request)."),
    workspace: Path = WorkspaceOpt,
    continue_from: Optional[Path] = typer.Option(None, help="Continue the text of this file."),
    brief: Optional[str] = typer.Option(None, help='Write on a brief: "a storm over a harbour town, told by a child" (voices prepared with --format brief or mixed).'),
    run: Optional[str] = typer.Option(None, help="Run id or version name (default: the published version)."),
    temperature: Optional[float] = typer.Option(None, help=f"0 = greedy; 1 = the voice's own distribution; lower = safer, higher = more surprising (default {_GEN.temperature:g}, or the voice's generate.temperature)."),
    top_p: Optional[float] = typer.Option(None, help=f"Keep the most likely words up to this share of probability (default {_GEN.top_p:g}: all)."),
    min_p: Optional[float] = typer.Option(None, help=f"Drop words less likely than this share of the likeliest (default {_GEN.min_p:g}: none dropped)."),
    typical_p: Optional[float] = typer.Option(None, help=f"Keep the words whose surprise is closest to the typical, up to this share of probability (default {_GEN.typical_p:g}: all)."),
    max_new_tokens: Optional[int] = typer.Option(None, "--max-new-tokens", "-n", help=f"Length of each text, in tokens (default {_GEN.max_new_tokens})."),
    seed: Optional[int] = typer.Option(None),
    samples: Optional[int] = typer.Option(None, help="How many texts to write."),
    engine: Optional[str] = typer.Option(None, help="auto (the settings' default: llama.cpp with the run's adapter, else transformers), llama.cpp or transformers."),
    best_of: int = typer.Option(1, "--best-of", min=1, help="Draft N texts (seeds seed…seed+N-1) and rank them, the one that reads most like you first."),
    rank_by: str = typer.Option("style", help="How --best-of ranks drafts: style (closeness of style features; the default) or discriminator (the classifier of your last evaluation: which draft it takes for yours)."),
    show_sources: bool = typer.Option(False, "--sources", help="After each text, the passages of your own writing nearest to it, and its longest verbatim overlap with them."),
) -> None:
    """Write in your voice, streamed to the terminal (or, with --best-of N, N drafts ranked).

    A prompt is continued; --brief asks for a passage on a brief; --continue-from continues a file."""
    from mimetic.voice.generate import write as run_write

    ws = Workspace.open(workspace, create=False)
    mode = None
    if brief is not None:
        if prompt or continue_from:
            raise MimeticError("Give a brief, or a prompt to continue, not both.", 'mimetic write --brief "a storm over a harbour town"')
        prompt, mode = brief, "write"
    gc = _gen_config(ws, temperature=temperature, top_p=top_p, min_p=min_p, typical_p=typical_p, max_new_tokens=max_new_tokens,
                     seed=seed, num_samples=samples)
    if best_of > 1:
        with console.status(f"Drafting {best_of} texts and scoring them against your writing…"):
            ranked = run_write(ws, prompt, gc, run=run, continue_from=continue_from, engine=engine, best_of=best_of, mode=mode,
                               rank_by=rank_by)
        found = _sources(ws, ranked) if show_sources else [None] * len(ranked)
        judged = ranked[0].writer_likeness is not None
        for rank, (g, src) in enumerate(zip(ranked, found), 1):
            score = f"reads as yours {100 * g.writer_likeness:.0f}% · " if judged else ""
            console.rule(f"#{rank} · text {g.log_id} · {score}style distance {g.style_distance:.2f} · seed {g.seed}" + (" · closest" if rank == 1 else ""))
            console.print(f"[dim]{escape(g.prompt[-300:])}[/]", end="")
            console.print(g.output, highlight=False, markup=False)
            if src:
                _show_sources(src)
        best = ranked[0]
        if judged:
            console.print(f"Most like your writing: #1 (seed {best.seed}): the classifier of your last evaluation, which tells "
                          f"your passages from the voice's, takes it for yours with probability {best.writer_likeness:.2f}.")
        else:
            console.print(f"Closest to your style: #1 (seed {best.seed}, distance {best.style_distance:.2f}). The distance is "
                          "the mean z-score of its style features against your own 150-word passages (lower is closer).")
        others = ",".join(str(g.log_id) for g in ranked if g is not best)
        console.print(f"Which sounds most like you? Mark it, and the voice can learn from it (mimetic train --from-feedback): "
                      f"mimetic rate {best.log_id} best --over {others} --workspace {ws.root}", markup=False)
        _notices(ws)
        return
    if prompt and mode is None:
        console.print(f"[dim]{escape(prompt)}[/]", end="")
    elif mode:
        console.print(f"[dim]Brief: {escape(prompt)}[/]")

    def stream(text: str) -> None:
        console.print(text, end="", highlight=False, markup=False)

    try:
        written = run_write(ws, prompt, gc, run=run, continue_from=continue_from, on_text=stream, engine=engine, mode=mode)
    except BaseException:
        console.print()  # the echoed prompt (or the text so far) ends its line: an error starts on its own
        raise
    console.print()
    if show_sources:
        for src in _sources(ws, written):
            _show_sources(src)
    _notices(ws)


def _sources(ws: Workspace, generations: list[Any]) -> list[Any]:
    from mimetic.voice.generate import sources

    with console.status("Looking for where these come from in your writing…"):
        return sources(ws, [g.output for g in generations])


def _print_hit(hit: Any, extra: str = "") -> None:
    """One passage of the writer's archive: where it is, then its snippet."""
    console.print(f"[bold]{escape(hit.where())}[/]  [dim]{escape(hit.path)}{extra}[/]")
    console.print(f"  {escape(hit.snippet)}", highlight=False)


def _show_sources(found: Any) -> None:
    """Where a text comes from (:class:`mimetic.voice.generate.Sources`): the writer's nearest passages
    and the longest verbatim overlap."""
    console.rule("[dim]nearest in your own writing[/]")
    for hit in found.nearest:
        _print_hit(hit)
    if not found.nearest:
        console.print("[dim]No passage of yours shares its distinctive words.[/]")
    o = found.overlap
    if o.tokens:
        console.print(f"Longest stretch found word for word in your writing: {o.tokens} tokens ({o.characters} characters), "
                      f"from {escape(o.document or '?')}: [italic]{escape(o.passage[:200])}[/]")


@app.command()
@_friendly
def search(
    query: str = typer.Argument(..., help='Words to look for in your own writing: mimetic search "harbour wall"'),
    workspace: Path = WorkspaceOpt,
    limit: int = typer.Option(10, min=1, help="How many passages to show."),
) -> None:
    """Search your own writing (the living archive): every passage with its file, date and paragraph."""
    from mimetic.text.archive import search as run_search

    ws = Workspace.open(workspace, create=False)
    hits, seconds = run_search(ws.corpus_dir, query, limit)
    for hit in hits:
        _print_hit(hit, f" · score {hit.score:.1f}")
    console.print(f"[dim]{len(hits)} passage{'s' if len(hits) != 1 else ''} in {seconds * 1000:.0f} ms.[/]")


@app.command()
@_friendly
def rewrite(
    draft: Path = typer.Argument(..., help="A text file: your flat draft, or another text, to rewrite in your voice."),
    workspace: Path = WorkspaceOpt,
    run: Optional[str] = typer.Option(None, help="Run id or version name (default: the published version)."),
    temperature: Optional[float] = typer.Option(None, help="Lower keeps closer to the draft's wording."),
    max_new_tokens: Optional[int] = typer.Option(None, "--max-new-tokens", "-n"),
    seed: Optional[int] = typer.Option(None),
    samples: Optional[int] = typer.Option(None, help="How many versions to write."),
    engine: Optional[str] = typer.Option(None, help="auto (the settings' default: llama.cpp with the run's adapter, else transformers), llama.cpp or transformers."),
) -> None:
    """Rewrite a draft in your voice (voices prepared with --format mixed)."""
    from mimetic.voice.generate import read_text_file
    from mimetic.voice.generate import rewrite as run_rewrite

    ws = Workspace.open(workspace, create=False)
    text = read_text_file(draft, "Give a text file with the draft to rewrite.")
    gc = _gen_config(ws, temperature=temperature, max_new_tokens=max_new_tokens, seed=seed, num_samples=samples)

    def stream(t: str) -> None:
        console.print(t, end="", highlight=False, markup=False)

    run_rewrite(ws, text, gc, run=run, on_text=stream, engine=engine)
    console.print()
    _notices(ws)


def _notices(ws: Workspace) -> None:
    for notice in ws.notices:
        err.print(f"[yellow]{escape(notice)}[/]")


@app.command()
@_friendly
def compare(
    workspace: Path = WorkspaceOpt,
    prompts: Optional[Path] = typer.Option(None, help="File of prompts (openings, briefs or drafts), one per paragraph (default: 5 held-out ones)."),
    mode: Optional[str] = typer.Option(None, help="write (from briefs), continue or rewrite, for voices prepared with --format brief or mixed."),
    run: Optional[str] = typer.Option(None, help="Run id or version name (default: the published version)."),
    temperature: Optional[float] = typer.Option(None),
    max_new_tokens: Optional[int] = typer.Option(None, "--max-new-tokens", "-n"),
    seed: Optional[int] = typer.Option(None),
    versions: Optional[str] = typer.Option(None, "--versions", help="Compare versions of your voice instead, side by side: a,b,c (names or run ids; see mimetic versions)."),
) -> None:
    """Base model and your voice on the same prompts, side by side (Markdown and HTML).

    With --versions a,b,c: those versions of your voice on the same prompts and seeds."""
    import functools as ft

    from mimetic.voice.generate import compare as run_compare
    from mimetic.voice.generate import default_mode, held_out_prompts, mode_prompts, read_prompts, run_format

    ws = Workspace.open(workspace, create=False)
    gc = _gen_config(ws, temperature=temperature, max_new_tokens=max_new_tokens, seed=seed)
    if versions:
        from mimetic.evaluation.versions import compare_versions

        if run or mode:
            raise MimeticError("--versions compares the versions you name, each in its own way of being asked.",
                               "Leave out --run and --mode: mimetic compare --versions a,b")
        plist = read_prompts(prompts) if prompts else held_out_prompts(ws)

        def show(i: int, info: Any, g: Any) -> None:
            console.rule(f"{info.label} · prompt {i + 1} · seed {g.seed}")
            console.print(f"[dim]{escape(g.prompt[-300:])}[/]", end="")
            console.print(g.output, highlight=False, markup=False)

        result = compare_versions(ws, _csv([versions]) or [], plist, gc, on_text=show)
        console.print(f"Side by side: {result.html}\nMarkdown: {result.markdown}")
        return
    fmt = run_format(ws, run)
    mode = mode or default_mode(fmt)
    if prompts:
        plist = read_prompts(prompts)
    elif mode in ("write", "rewrite") or (mode == "continue" and fmt == "mixed"):
        plist = [p["prompt"] for p in mode_prompts(ws, mode)]
    else:
        plist = held_out_prompts(ws)
    result = _compare(ws, plist, gc, run, ft.partial(run_compare, mode=mode))
    console.print(f"Side by side: {result.html}\nMarkdown: {result.markdown}")


def _compare(ws: Workspace, prompts: list[str], gc: cfg.GenerateConfig, run: str | None, fn: Callable[..., Any]) -> Any:
    from rich.columns import Columns
    from rich.panel import Panel

    def show(i: int, base: Any, tuned: Any) -> None:
        console.rule(f"Prompt {i + 1}")
        console.print(f"[dim]{escape(base.prompt)}[/]")
        console.print(Columns([Panel(base.output.strip(), title="base model", width=60),
                               Panel(tuned.output.strip(), title="your voice", width=60, border_style="green")]))

    with console.status("Writing with the base model and with your voice…"):
        return fn(ws, prompts, gc, run=run, on_pair=show)


@app.command()
@_friendly
def evaluate(
    run: Optional[str] = typer.Argument(None, help="Run id or version name (default: the published version)."),
    workspace: Path = WorkspaceOpt,
    references: Optional[Path] = typer.Option(None, help="Folder with one sub-folder of texts per reference author."),
    prompts: Optional[Path] = typer.Option(None, help="Your own prompts (one per paragraph) for free generations."),
    sample_words: Optional[int] = typer.Option(None, help="Words of samples per model (default 10,000: ten 1,000-word sets)."),
    metric: Optional[str] = typer.Option(None, help="cosine (default) or burrows."),
    mfw: Optional[int] = typer.Option(None, help="Number of most-frequent words (default 300)."),
) -> None:
    """Measure the voice: held-out NLL, style (Delta), memorization and names, in one HTML report."""
    from mimetic.evaluation.evaluate import evaluate as run_evaluate
    from mimetic.voice.generate import read_prompts

    ws = Workspace.open(workspace, create=False)
    vc = ws.load_config()
    ec = cfg.replace(vc.evaluate, sample_words=sample_words, metric=metric, n_mfw=mfw)
    plist = read_prompts(prompts) if prompts else None
    with RichEvents(console) as show:
        result = run_evaluate(ws, run, ec, references=references, prompts=plist, on_event=show)
    _evaluation_summary(result)


def _evaluation_summary(result: Any) -> None:
    console.rule("How close is the voice?")
    for line in result.summary():
        console.print(f"• {escape(line)}", highlight=False)
    console.print(f"Report: {result.report}\nAll numbers: {result.metrics_path}")


@app.command()
@_friendly
def voice(
    corpus: list[Path] = typer.Argument(..., help="Folder(s) of your writing."),
    workspace: Optional[Path] = typer.Option(None, "--workspace", "-w", help="Voice folder (default: voices/<folder name>)."),
    base_model: Optional[str] = typer.Option(None, help="Base model: the embedded default, a folder, a .gguf, a hub id, or auto (the largest this machine trains in the time budget)."),
    preset: Optional[str] = typer.Option(None, help="A setup for your hardware (see `mimetic presets`)."),
    time_budget_min: Optional[float] = typer.Option(15.0, "--time-budget", help="Minutes of training at most (evaluation included)."),
    epochs: Optional[float] = typer.Option(None, help="Passes over your writing (default 2, within the time budget)."),
    format: Optional[str] = typer.Option(None, "--format", help="completion (default) or chat."),
) -> None:
    """The main job: ingest → prepare → train → compare, in one go."""
    from mimetic.core.events import Finished, Started
    from mimetic.pipeline import make_voice

    started = time.perf_counter()
    titles = {"ingest": "1/4 ingest", "prepare": "2/4 prepare", "train": "3/4 train", "compare": "4/4 compare"}
    with CtrlC() as ctrl_c, RichEvents(console) as show:

        def on_event(e: Any) -> None:  # a rule before each stage, its report after it
            if isinstance(e, Started) and e.stage in titles:
                console.rule(titles.pop(e.stage))
            show(e)
            if isinstance(e, Finished) and e.stage == "ingest":
                _ingest_report(e.values["result"])
            if isinstance(e, Finished) and e.stage == "prepare":
                _prepare_report(e.values["result"])

        r = make_voice(corpus, workspace, base_model=base_model, preset=preset, time_budget_min=time_budget_min, epochs=epochs,
                       format=format, on_event=on_event, should_stop=ctrl_c)
    _train_summary(r.train)
    console.print(f"Side by side: {r.compare.html}")
    console.print(f"[bold green]Done[/] in {(time.perf_counter() - started) / 60:.1f} min. Try: "
                  f'mimetic write "Your opening words" --workspace {r.workspace.root}\n'
                  f"Measure the voice (style, what a reader sees, memorization, names; about 4 minutes on 2 CPU cores): mimetic evaluate --workspace {r.workspace.root}")


@app.command()
@_friendly
def export(
    run: Optional[str] = typer.Argument(None, help="Run or version to export (default: the published version; see `mimetic versions`)."),
    workspace: Path = WorkspaceOpt,
    format: Optional[str] = typer.Option(None, "--format", help="Comma-separated: adapter,merged,gguf,lora-gguf,ollama (default: all)."),
    quant: Optional[str] = typer.Option(None, help="GGUF types: f16,q8_0,q4_k_m (default: all three)."),
    out: Optional[Path] = typer.Option(None, help="Folder to write to (default: <voice>/exports/<run>)."),
    system_prompt: Optional[str] = typer.Option(None, help="System prompt for a chat voice in Ollama."),
    verify: Optional[bool] = typer.Option(None, "--verify/--no-verify", help="Check every GGUF against the merged model in llama.cpp."),
) -> None:
    """Export the voice for other tools: adapter, merged model, GGUF, Ollama — each file checked."""
    from mimetic.voice.export import export as run_export

    ws = Workspace.open(workspace, create=False)
    vc = ws.load_config()
    vc.export = cfg.replace(vc.export, formats=_csv([format]) if format else None, quantizations=_csv([quant]) if quant else None,
                            system_prompt=system_prompt, verify=verify)
    with RichEvents(console) as show:
        result = run_export(ws, run, vc.export, out, on_event=show)
    t = Table(title=f"Exported to {result.out_dir}", show_edge=False)
    t.add_column("file")
    t.add_column("size", justify="right")
    from mimetic.voice.export import human_size

    for name, n in result.files.items():
        t.add_row(name, human_size(n))
    console.print(t)
    if result.verification:
        v = Table(title="Checked in llama.cpp: next-token logits vs the merged model", show_edge=False)
        for col in ("file", "max |difference|", "same next token", "base model, same type"):
            v.add_column(col, justify="left" if col == "file" else "right")
        for row in result.verification:
            control = f"{100 * row['base_model_agreement']:.1f}%" if "base_model_agreement" in row else "–"
            v.add_row(row["file"], f"{row['max_abs_diff']:.3f}", f"{100 * row['argmax_agreement']:.1f}%", control)
        console.print(v)
    if result.ollama_command:
        console.print(f"Run it in Ollama: [bold]{escape(result.ollama_command)}[/]")
    console.print(f"Model card: {result.out_dir / 'README.md'}")


@app.command()
@_friendly
def presets(name: Optional[str] = typer.Argument(None, help="Show one preset in full.")) -> None:
    """The setups of the writers mimetic grew from, one per kind of machine (use with --preset)."""
    from mimetic.core.presets import PRESETS, get_preset

    for p in [get_preset(name)] if name else PRESETS.values():
        console.rule(f"[bold]{p.name}[/] — {escape(p.title)}")
        console.print(f"For: {escape(p.hardware)}")
        console.print(f"From: {escape(p.source)}")
        for section, values in (("prepare", p.prepare), ("train", p.train), ("export", p.export)):
            console.print(f"  [{section}] " + ", ".join(f"{k} = {v!r}" for k, v in values.items()), markup=False)
        console.print(f"[dim]{escape(p.filled_in)}[/]")
    if not name:
        console.print("Use one: mimetic voice ~/my-writing --preset NAME (or mimetic prepare --preset NAME); "
                      "its settings go into the voice's mimetic.toml, where you can change them. "
                      "Or let mimetic choose a base model for this machine: --base-model auto")


@app.command()
@_friendly
def runs(workspace: Path = WorkspaceOpt) -> None:
    """List training runs with their held-out NLL, the unfinished ones too (resume them)."""
    from mimetic.core.records import RunSummary

    ws = Workspace.open(workspace, create=False)
    folders = sorted(p for p in ws.runs_dir.glob("*") if p.is_dir() and not p.name.startswith(".")) if ws.runs_dir.is_dir() else []
    t = Table(show_edge=False)
    t.add_column("run", no_wrap=True, min_width=max([len(p.name) for p in folders] + [3]))  # ids are never cut
    for col in ("version", "base NLL", "best NLL", "change", "steps"):
        t.add_column(col, overflow="fold")
    t.add_column("stopped because", overflow="fold", ratio=1)
    published = ws.published_run()
    unfinished = []
    for d in folders:
        name = ", ".join(ws.names_of(d.name)) + (" ★" if d.name == published else "")
        if not (d / "summary.json").exists():
            unfinished.append(d.name)
            step = _last_step(d / "metrics.jsonl")
            where = f"at step {step}" if step is not None else "before its first step"
            how = "resume it" if (d / "checkpoint" / "state.pt").exists() else "no checkpoint: start a new run"
            t.add_row(d.name, name, "", "", "", "" if step is None else str(step), f"[yellow]not finished ({where}; {how})[/]")
            continue
        try:
            s = RunSummary.load(d / "summary.json")
        except MimeticError as e:  # one damaged run must not hide the others
            t.add_row(d.name, name, "", "", "", "", f"[red]{escape(e.message)}[/]")
            continue
        t.add_row(s.run_id, name, f"{s.base_nll:.3f}", f"{s.best_nll:.3f}", f"{-100 * s.held_out_nll_drop:+.1f}%",
                  str(s.final_step), escape(s.stopped_because))
    console.print(t)
    console.print("[dim]★ the published version (mimetic versions, mimetic publish).[/]")
    if unfinished:
        console.print(f"[dim]Not finished: {', '.join(unfinished)}. Resume one with: mimetic train --resume RUN "
                      f"--workspace {escape(str(ws.root))}[/]", soft_wrap=True)


def _last_step(metrics: Path) -> int | None:
    """The last training step written in a run's ``metrics.jsonl`` (``None`` before the first)."""
    step = None
    try:
        with metrics.open(encoding="utf-8") as f:
            for line in f:
                try:
                    row = json.loads(line)
                except ValueError:
                    continue  # a line cut by the interruption
                if "train_loss" in row:
                    step = row.get("step", step)
    except OSError:
        return None
    return step


@app.command()
@_friendly
def versions(
    workspace: Path = WorkspaceOpt,
    where: Optional[str] = typer.Option(None, help='Only show what this selection would pick, e.g. "date < 2017".'),
) -> None:
    """The versions of your voice: what each learned from, its settings and how close it came.

    The published one (★) is the voice write, export and the app use; change it with mimetic publish."""
    from mimetic.evaluation.versions import list_versions

    ws = Workspace.open(workspace, create=False)
    if where is not None:
        from mimetic.core.selection import parse as parse_where

        console.print(f"{where!r} selects {parse_where(where).describe(ws.read_manifest().files)}.")
        return
    infos = list_versions(ws)
    if not infos:
        raise MimeticError(f"The voice in {ws.root} has no finished training run yet.", f"Run: mimetic train --workspace {ws.root}")
    t = Table(show_edge=False)
    for col in ("", "version", "run", "learned from", "settings", "held-out NLL", "attribution", "spread"):
        t.add_column(col, justify="right" if col in ("held-out NLL", "attribution", "spread") else "left")
    for v in infos:
        data = v.where or "all your writing"
        if v.documents is not None and v.where:
            data += f" ({v.documents} documents)"
        if v.parent:
            data = f"{v.kind} on {ws.names_of(v.parent)[0] if ws.names_of(v.parent) else v.parent}"
        settings = f"{v.base_model}, r {v.lora_r}/α {v.lora_alpha}, lr {v.learning_rate:.1e}, {v.steps} steps"
        attribution = "–" if v.attribution is None else f"{v.attribution:.0%}" + (f" (you {v.control:.0%})" if v.control is not None else "")
        spread_ = "–" if v.spread_ratio is None else f"{v.spread_ratio:.2f}×"
        t.add_row("★" if v.published else "", ", ".join(v.names) or "–", v.run, data, settings,
                  f"{v.held_out_nll:.3f} ({-100 * v.held_out_nll_drop:+.1f}%)", attribution, spread_)
    console.print(t)
    console.print("[dim]held-out NLL: on the held-out part of what the version learned from (change from the base model, "
                  "or from the parent for polish and feedback). attribution: share of its 1,000-word sets attributed to you "
                  "in its last evaluation (mimetic evaluate VERSION). ★ published.[/]")


@app.command()
@_friendly
def publish(
    version: str = typer.Argument(..., help="The version's name or run id (see mimetic versions)."),
    workspace: Path = WorkspaceOpt,
) -> None:
    """Make a version the voice that write, export, serve and the app use."""
    ws = Workspace.open(workspace, create=False)
    with ws.lock("published"):
        run_id = ws.publish(version)
    names = ws.names_of(run_id)
    console.print(f"Published {'version ' + names[0] + ' (run ' + run_id + ')' if names else 'run ' + run_id}: "
                  "write, export, serve and the app now use it.")


@app.command()
@_friendly
def drift(
    versions: str = typer.Option(..., "--versions", help="The versions to place among your years: a,b,c (names or run ids)."),
    workspace: Path = WorkspaceOpt,
    sample_words: Optional[int] = typer.Option(None, help="Words each version writes (default 10,000: ten 1,000-word sets)."),
    mfw: Optional[int] = typer.Option(None, help="Number of most-frequent words (default 300)."),
    eras: Optional[str] = typer.Option(None, "--eras", help="Cut your years into eras where later ones start: 2017 (two eras) or 2015,2018 (default: years, merged until each has enough text)."),
) -> None:
    """Style drift: your writing year by year and each version's samples on one style map, and
    which of your eras each version's writing reads as."""
    from mimetic.evaluation.versions import drift as run_drift

    ws = Workspace.open(workspace, create=False)
    ec = cfg.replace(ws.load_config().evaluate, sample_words=sample_words, n_mfw=mfw)
    splits = None
    if eras:
        try:
            splits = [int(y) for y in _csv([eras]) or []]
        except ValueError:
            raise MimeticError(f"--eras {eras!r} is not a list of years.", "Write the first years of later eras: --eras 2017") from None
    with RichEvents(console) as show:
        d = run_drift(ws, _csv([versions]) or [], ec, splits=splits, on_event=show)
    t = Table(title="Which era does each one's writing read as? (1,000-word sets)", show_edge=False)
    t.add_column("")
    for era in d.eras:
        t.add_column(era, justify="right")
    t.add_column("in its own era", justify="right")
    t.add_column("spread", justify="right")
    for label, counts in d.table.items():
        own = d.own_era_share.get(label)
        t.add_row(label, *(str(counts[e]) for e in d.eras), "" if own is None else f"{own:.0%}",
                  f"{d.spread.get(label, float('nan')):.2f}")
    console.print(t)
    console.print(f"Map and table: {d.html_path}\nAll numbers: {d.json_path}")


@app.command()
@_friendly
def stop(
    run: Optional[str] = typer.Argument(None, help="Run to stop (default: the latest)."),
    workspace: Path = WorkspaceOpt,
) -> None:
    """Ask a training run in progress (in another terminal or the app) to save a checkpoint and stop."""
    from mimetic.training.loop import Run

    ws = Workspace.open(workspace, create=False)
    run_dir = ws.run_dir(run, finished=False)
    if (run_dir / "summary.json").exists():
        raise MimeticError(f"Run {run_dir.name} has already finished.", "Nothing to stop; see: mimetic runs")
    Run.request_stop(run_dir)
    console.print(f"Asked run {run_dir.name} to stop after its current step; it keeps a checkpoint. "
                  f"Resume with: mimetic train --resume {run_dir.name} --workspace {ws.root}")


@app.command()
@_friendly
def log(workspace: Path = WorkspaceOpt, limit: int = typer.Option(10, help="How many generations.")) -> None:
    """Show the latest generations from the voice's log (mimetic.db), with your marks on them."""
    from mimetic.core.logdb import marks

    ws = Workspace.open(workspace, create=False)
    marked: dict[int, list[str]] = {}
    for m in marks(ws.db_path):
        marked.setdefault(m["generation_id"], []).append(m["label"])
    for g in ws.generations(limit):
        labels = f" · marked {', '.join(marked[g['id']])}" if g["id"] in marked else ""
        console.rule(f"#{g['id']} {g['created_at']} · {g['command']} · {json.loads(g['params']).get('model')}{labels}")
        console.print(f"[dim]{escape(g['prompt'])}[/]{escape(g['output'])}", highlight=False)


@app.command()
@_friendly
def rate(
    generation: int = typer.Argument(..., help="The text's number, as `mimetic log` shows it."),
    mark: str = typer.Argument(..., help="keep, discard, or best (with --over)."),
    over: Optional[str] = typer.Option(None, help="With best: the numbers of the drafts it was better than, e.g. 13,14."),
    note: str = typer.Option("", help="Why, in your words (kept with the mark)."),
    workspace: Path = WorkspaceOpt,
) -> None:
    """Mark a text the voice wrote: keep it, discard it, or pick it as the best of several drafts.

    Marks are kept in the voice's mimetic.db with the prompt, settings and run of the text, for
    the feedback loop."""
    from mimetic.core.logdb import add_marks

    ws = Workspace.open(workspace, create=False)
    try:
        others = [int(x) for x in (over or "").replace(" ", "").split(",") if x]
    except ValueError:
        raise MimeticError(f"--over takes numbers separated by commas, not {over!r}.", "mimetic rate 12 best --over 13,14") from None
    ids = add_marks(ws.db_path, generation, mark, others, note)
    what = f"#{generation} marked {mark}" + (f" over #{', #'.join(map(str, others))}" if others else "")
    console.print(f"{what} ({len(ids)} mark{'s' if len(ids) > 1 else ''} saved in {ws.db_path.name}).")


@app.command()
@_friendly
def polish(
    run: Optional[str] = typer.Argument(None, help="The run or version to polish (default: the published version)."),
    workspace: Path = WorkspaceOpt,
    resume: Optional[str] = typer.Option(None, help="Continue a stopped polish run: its id, or 'latest'."),
    pairs: Optional[int] = typer.Option(None, help="Preference pairs to make from your training passages (default 64)."),
    beta: Optional[float] = typer.Option(None, help="DPO beta: how far the voice may move from the trained one (default 0.1)."),
    learning_rate: Optional[float] = typer.Option(None, "--lr", help="Learning rate (default: 1/40 of the size-aware training rule)."),
    epochs: Optional[float] = typer.Option(None, help="Passes over the pairs (default 1)."),
    max_steps: Optional[int] = typer.Option(None, help="Stop after this many optimizer steps."),
    batch_size: Optional[int] = typer.Option(None, help="Pairs per optimizer step (default 4)."),
    device: Optional[str] = typer.Option(None, help="auto, cpu, cuda or mps."),
    from_feedback: bool = typer.Option(False, "--from-feedback", help="Learn from your marks (mimetic rate) instead: DPO on your picks among drafts, KTO on what you kept or discarded."),
    version: Optional[str] = typer.Option(None, "--version", help="Name the new version (default: the parent's name +polish or +feedback)."),
    publish: Optional[bool] = typer.Option(None, "--publish/--no-publish", help="Publish the new run when it finishes (default: when it continues the published voice and has no name)."),
) -> None:
    """Polish a trained voice towards your writing: preference training on top of it.

    By default self-play (DPO): the voice continues openings of your training passages, and your
    real continuation is preferred to the voice's own. With --from-feedback, your own marks are
    what it learns from. Makes a new run; the trained one is left as it was."""
    from mimetic.training.preference import polish as run_polish

    ws = Workspace.open(workspace, create=False)
    pc = None
    feedback = None
    if from_feedback and not resume:
        from mimetic.voice.generate import feedback_examples

        feedback = feedback_examples(ws, run)
        console.print(f"Learning from {feedback['marks']} marks: {len(feedback['pairs'])} picks among drafts (DPO), "
                      f"{len(feedback['singles'])} texts kept or discarded (KTO)"
                      + (f"; {feedback['skipped']} left out (not the voice's, or prompts that cannot be rebuilt)." if feedback["skipped"] else "."))
    if resume:
        from mimetic.training.session import check_frozen

        if run:
            raise MimeticError("Give a run to polish or --resume, not both.", "Resume with: mimetic polish --resume RUN")
        check_frozen({"pairs": pairs, "beta": beta, "lr": learning_rate, "epochs": epochs, "max-steps": max_steps,
                      "batch-size": batch_size, "version": version}, polish=True)
    else:
        pc = cfg.replace(ws.load_config().polish, pairs=pairs, beta=beta, learning_rate=learning_rate, epochs=epochs,
                         max_steps=max_steps, batch_size=batch_size)
    if feedback is None:
        console.print("Making preference pairs (your continuation against the voice's own), then training (Ctrl-C saves and stops)…")
    with CtrlC() as ctrl_c, RichEvents(console) as show:
        r = run_polish(ws, run, pc, resume=(True if resume == "latest" else resume) or None, device=device,
                       on_event=show, should_stop=ctrl_c, feedback=feedback, version=version or "", publish=publish)
    t = Table(title=f"Run {r.run_id} (polished from {r.parent_run_id})", show_edge=False, show_header=False)
    t.add_column()
    t.add_column(justify="right")
    t.add_row("held-out NLL, before", f"{r.nll_before:.3f} nats/token")
    t.add_row("held-out NLL, after", f"{r.nll_after:.3f} (best {r.best_nll:.3f} at step {r.best_step}, kept)")
    t.add_row("preference margin (train pairs)", f"{r.margin_before:+.3f} → {r.margin_after:+.3f}")
    t.add_row("preferred the text you chose" if feedback else "preferred your text", f"{100 * r.accuracy_after:.0f}% of pairs")
    t.add_row("pairs, steps", f"{r.pairs}, {r.final_step}")
    t.add_row("stopped because", r.stopped_because)
    console.print(t)
    console.print(f"New run: {r.run_id}   Adapter: {r.run_dir / 'adapter'}")
    _published_line(ws, r.run_id)


def _voice_folders(paths: Optional[list[Path]]) -> list[Path]:
    """The folders to serve: those given, else ``voices/`` (where ``mimetic voice`` puts voices) if
    there is one, else the ``--workspace`` default."""
    if paths:
        return paths
    return [Path("voices")] if Path("voices").is_dir() else [Path(os.environ.get("MIMETIC_WORKSPACE", "voice"))]


VoicesArg = typer.Argument(None, help="Voice folders, or folders of voices (default: voices/).")


@app.command(name="app")
@_friendly
def desk(
    voices: Path = typer.Argument(Path("voices"), help="The folder of your voices (created if missing)."),
    host: str = typer.Option("127.0.0.1", help="Interface to listen on. Anything but this machine gets a token."),
    port: int = typer.Option(8765, help="TCP port."),
    allow: Optional[list[Path]] = typer.Option(None, "--allow", help="A folder the app may read your writing from (default: your home folder); repeat for more."),
    token: Optional[str] = typer.Option(None, envvar="MIMETIC_APP_TOKEN", help="Require this token (made for you when --host is not this machine)."),
    no_browser: bool = typer.Option(False, "--no-browser", help="Do not open a browser."),
) -> None:
    """The writer's desk: every stage in a local web page (voices, corpus, training, writing, evaluation, export)."""
    from mimetic.frontends.app import serve_app

    serve_app(voices, host=host, port=port, allowed=allow, token=token, open_browser=not no_browser)


@app.command()
@_friendly
def serve(
    paths: Optional[list[Path]] = VoicesArg,
    host: str = typer.Option("127.0.0.1", help="Interface to listen on. Anything but this machine needs --api-key."),
    port: int = typer.Option(8000, help="TCP port (0: any free one)."),
    api_key: Optional[str] = typer.Option(None, "--api-key", envvar="MIMETIC_API_KEY",
                                          help="Require this key (Authorization: Bearer KEY) on every request."),
    max_loaded: int = typer.Option(4, help="Voices kept in memory at once."),
    threads: Optional[int] = typer.Option(None, help="llama.cpp threads per voice (default: every core)."),
) -> None:
    """Serve your exported voices to other programs: an OpenAI-compatible API on this machine."""
    from mimetic.frontends.serve import ServeConfig
    from mimetic.frontends.serve import serve as run_serve

    config = ServeConfig(host=host, port=port, api_key=api_key, max_loaded=max_loaded, threads=threads)

    def ready(url: str, models: list[Any], notes: list[str]) -> None:
        t = Table(title=f"Serving at {url}", show_edge=False)
        for col in ("model", "kind", "format", "GGUF file"):
            t.add_column(col)
        for m in models:
            t.add_row(m.id, m.kind, m.format, str(m.gguf.relative_to(m.workspace)) if m.workspace else m.gguf.name)
        console.print(t)
        for n in notes:
            console.print(f"[yellow]Not served:[/] {escape(n)}")
        first = next(m.id for m in models if m.kind == "voice")
        console.print(f"Try it: curl {url}/chat/completions -H 'Content-Type: application/json' "
                      f"-d '{{\"model\": \"{first}\", \"messages\": [{{\"role\": \"user\", \"content\": \"The morning after\"}}]}}'",
                      highlight=False, soft_wrap=True)
        console.print("Stop with Ctrl-C.")

    def loading(models: list[Any]) -> None:
        console.print(f"Loading {', '.join(m.id for m in models)} (so the first request is answered at once)…", highlight=False)

    run_serve(_voice_folders(paths), config, on_ready=ready, on_loading=loading)


@app.command()
@_friendly
def mcp(paths: Optional[list[Path]] = VoicesArg) -> None:
    """Let AI clients write in your voices: an MCP server on standard input and output.

    Add it to a client's MCP settings (see the README) rather than running it by hand."""
    from mimetic.frontends.mcpserver import run_stdio

    run_stdio([p.resolve() for p in _voice_folders(paths)])


def main() -> None:
    """Console-script entry point."""
    import warnings

    from mimetic.models.distributed import is_main_process

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if not is_main_process():  # the other training processes work silently
        console.quiet = err.quiet = True
    warnings.filterwarnings("ignore", category=FutureWarning)  # library deprecation notices are not for writers
    warnings.filterwarnings("ignore", message=".*gradient_checkpointing.*")
    try:
        app(prog_name="mimetic")
    finally:
        from mimetic.models.distributed import leave_process_group

        leave_process_group()


if __name__ == "__main__":  # pragma: no cover
    main()
    sys.exit(0)
