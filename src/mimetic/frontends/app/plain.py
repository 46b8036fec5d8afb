"""What the desk says to a writer: a plain verdict before every measure, and for every error the
page that fixes it (a button), never a terminal command to type."""

import re
from typing import Any

# a command the CLI would print in a hint: "mimetic train --resume R --workspace W"
_COMMAND = re.compile(r"\bmimetic ([a-z][a-z-]*)\b")
# which page of the desk does what each command does: (label of the button, page)
_PAGES = {
    "ingest": ("Read your writing", "corpus"), "prepare": ("Read your writing again", "corpus"),
    "voice": ("Read your writing", "corpus"), "train": ("Go to Train", "train"), "polish": ("Go to Train", "train"),
    "stop": ("Go to Train", "train"), "runs": ("Go to Train", "train"), "versions": ("Go to Train", "train"),
    "publish": ("Go to Train", "train"), "write": ("Go to Write", "write"), "compare": ("Go to Write", "write"),
    "evaluate": ("Go to Evaluate", "evaluate"), "export": ("Go to Export", "evaluate#export"),
}


def fix(message: str, hint: str, voice: str | None) -> dict[str, Any]:
    """An error as the desk shows it: the message and hint without any terminal command, and a
    button to the page that does what the command would (``action``: ``{"label", "href"}``, or
    ``None`` when the hint needs no page).

    A clause of the hint (split at ``;`` and sentence ends) that holds a command is replaced by
    the button; a parenthesis of the message that holds one is dropped.
    """
    commands = _COMMAND.findall(f"{message} {hint}")
    message = re.sub(r"\s*\([^()]*\bmimetic [a-z][^()]*\)", "", message)
    clauses = [c for c in re.split(r"(?<=[.;])\s+", hint or "") if c and not _COMMAND.search(c)]
    action = None
    if commands:
        label, page = _PAGES.get(commands[0], ("Open the voice", "corpus"))
        action = {"label": label, "href": f"/voices/{voice}/{page}" if voice else "/"}
    elif voice and re.search(r"\bVoices page\b", hint or ""):
        action = {"label": "Your voices", "href": "/"}
    elif voice and re.search(r"\b(Train|Write|Evaluate|Corpus) page\b", hint or ""):
        page = re.search(r"\b(Train|Write|Evaluate|Corpus) page\b", hint).group(1)
        action = {"label": f"Go to {page}", "href": f"/voices/{voice}/{page.lower()}"}
    return {"message": message, "hint": " ".join(clauses).rstrip(";").strip(), "action": action}


def _pct(x: float) -> str:
    return f"{100 * abs(x):.1f}%"


def nll_verdict(drop: float | None) -> str:
    """One sentence for a held-out NLL change (``drop``: ``1 - voice / base``)."""
    if drop is None:
        return "Not measured yet."
    if drop > 0.005:
        return f"Closer: the voice predicts writing of yours it never saw {_pct(drop)} better than the base model."
    return (f"Not yet closer: the voice predicts writing of yours it never saw no better than the base model "
            f"({'+' if drop < 0 else ''}{100 * -drop:.1f}%).")


def voice_verdict(nll_drop: float | None, attribution: float | None) -> str:
    """A few words for the Voices page's row of one voice."""
    if nll_drop is None:
        return "Not trained yet"
    if nll_drop <= 0.005:
        return "Not yet closer than the base model"
    if attribution is not None and attribution < 0.5:
        return "Closer, not yet read as you"
    return "Closer than the base model"


def evaluation_verdict(m: dict[str, Any]) -> str:
    """The evaluation page's first sentence, from ``metrics.json``: ``Close``, ``Getting closer``
    or ``Not yet close``, with the two measures that decide it (the style distance from the
    writer's held-out writing against the base model's, and how many sample sets a stylometric
    attribution reads as the writer's) and the fit.
    """
    try:
        st = m["stylometry"]
        d = st["distances"][st["metric"]]
        voice_d, base_d = float(d["voice_to_held_out"]), float(d["base_to_held_out"])
        att = (st.get("attribution") or {}).get("voice") or {}
        sets = int(att.get("sets") or 0)
        yours = int((att.get("to") or {}).get(st["candidates"][0], 0)) if sets else 0
        drop = float(m["nll"]["drop"]["value"])
    except (KeyError, IndexError, TypeError, ValueError):
        return "This evaluation lacks the measures for a verdict: evaluate the voice again."
    style = (f"its style is closer to your writing than the base model's ({voice_d:.3f} against {base_d:.3f}, lower is closer)"
             if voice_d < base_d else
             f"its style is farther from your writing than the base model's ({voice_d:.3f} against {base_d:.3f}, lower is closer)")
    sets_line = f"{yours} of {sets} of its sample sets were read as yours" if sets else "no sample set could be attributed"
    fit = (f"it predicts your unseen writing {_pct(drop)} better" if drop > 0.005 else
           "it predicts your unseen writing no better than the base model")
    if voice_d < base_d and sets and yours * 2 >= sets and drop > 0.005:
        head = "Close"
    elif voice_d >= base_d or not yours or drop <= 0.005:
        head = "Not yet close"
    else:
        head = "Getting closer"
    return f"{head}: {style}; {sets_line}; {fit}."
