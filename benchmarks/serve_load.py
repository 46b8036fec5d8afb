"""Load on ``mimetic serve``: many requests, several at a time, to two voices, on loopback.

Starts the server in this process on a free port of 127.0.0.1 over the exported voices in
``VOICES`` (a folder of voices, or voice folders; at least two exported voices), then sends
``--requests`` chat and completion requests with ``--concurrency`` at a time through the
official ``openai`` client, alternating the voices, each with its own seed, and ``--baseline``
requests one at a time for comparison. Checks that every request got a complete answer
(``finish_reason`` stop or length, no error), from the voice it asked for, logged in that
voice's ``mimetic.db``; and that the answers were not mixed between concurrent requests: a
sample of them is asked again one at a time with the same voice and seed and must give the same
text. Reports throughput (requests/s, generated tokens/s) and p50/p95 latency.

    .venv/bin/python benchmarks/serve_load.py /tmp/served --requests 200 --concurrency 8

Results: one JSON object on stdout; RESULTS.md has the table by hand.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from openai import OpenAI

from mimetic.frontends.serve import ServeConfig, Server, find_models


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("voices", type=Path, nargs="+")
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--baseline", type=int, default=24, help="requests sent one at a time first")
    ap.add_argument("--max-tokens", type=int, default=48)
    ap.add_argument("--recheck", type=int, default=24, help="answers asked again one at a time to check none was mixed")
    ap.add_argument("--threads", type=int, default=None, help="llama.cpp threads per voice")
    a = ap.parse_args()
    models, notes = find_models(a.voices)
    voices = [m for m in models if m.kind == "voice" and "@" not in m.id][:2]
    if len(voices) < 2:
        raise SystemExit(f"Need two exported voices; found {[m.id for m in voices]} ({notes}).")
    logs = {m.id: m.workspace / "mimetic.db" for m in voices}

    def count_logged() -> dict[str, int]:
        out = {}
        for vid, db in logs.items():
            with sqlite3.connect(db) as con:
                out[vid] = con.execute("SELECT COUNT(*) FROM generations WHERE command LIKE 'serve %'").fetchone()[0]
        return out

    openings = ["The morning after the storm", "I had not meant to stay so long", "There was a letter on the table",
                "We went down to the river", "Nobody in the house", "It was late in the year when"]

    with Server(models, ServeConfig(port=0, threads=a.threads, max_loaded=4)) as server:
        client = OpenAI(base_url=server.url, api_key="local", max_retries=0, timeout=600)

        def ask(i: int) -> dict:
            voice = voices[i % 2]
            seed = 1000 + i
            t = time.perf_counter()
            if i % 3 == 2:
                r = client.completions.create(model=voice.id, prompt=openings[i % len(openings)], max_tokens=a.max_tokens, seed=seed)
                text, finish = r.choices[0].text, r.choices[0].finish_reason
            else:
                r = client.chat.completions.create(model=voice.id, messages=[{"role": "user", "content": openings[i % len(openings)]}],
                                                   max_tokens=a.max_tokens, seed=seed)
                text, finish = r.choices[0].message.content, r.choices[0].finish_reason
            return {"i": i, "asked": voice.id, "model": r.model, "text": text, "finish": finish,
                    "tokens": r.usage.completion_tokens, "latency": time.perf_counter() - t}

        def run(n: int, concurrency: int, offset: int) -> tuple[list[dict], float]:
            t = time.perf_counter()
            with ThreadPoolExecutor(concurrency) as pool:
                out = list(pool.map(ask, range(offset, offset + n)))
            return out, time.perf_counter() - t

        ask(0), ask(1)  # load both voices before timing
        before = count_logged()
        base, base_s = run(a.baseline, 1, 10_000)
        load, load_s = run(a.requests, a.concurrency, 20_000)
        after = count_logged()
        picks = load[:: max(1, len(load) // a.recheck)][: a.recheck]
        same = sum(ask(p["i"])["text"] == p["text"] for p in picks)

    def stats(rows: list[dict], seconds: float) -> dict:
        lat = np.array([r["latency"] for r in rows])
        toks = sum(r["tokens"] for r in rows)
        return {"requests": len(rows), "seconds": round(seconds, 2), "requests_per_s": round(len(rows) / seconds, 3),
                "tokens_per_s": round(toks / seconds, 1), "p50_s": round(float(np.percentile(lat, 50)), 3),
                "p95_s": round(float(np.percentile(lat, 95)), 3)}

    print(json.dumps({
        "voices": [m.id for m in voices], "max_tokens": a.max_tokens, "concurrency": a.concurrency,
        "one_at_a_time": stats(base, base_s), "concurrent": stats(load, load_s),
        "throughput_ratio": round((len(load) / load_s) / (len(base) / base_s), 2),
        "complete": sum(r["finish"] in ("stop", "length") for r in load), "from_the_voice_asked": sum(r["model"] == r["asked"] for r in load),
        "logged": {k: after[k] - before[k] for k in after}, "expected_logged": {v.id: sum(r["asked"] == v.id for r in base + load) for v in voices},
        "rechecked_same_text": f"{same} of {len(picks)}",
    }, indent=1))


if __name__ == "__main__":
    main()
