import contextlib
import json
import math

import pytest
import torch
from safetensors.torch import load_file

from conftest import prepared_voice, small_train_config
from mimetic import MimeticError, TrainConfig, TrainingInterrupted, default_learning_rate, train
from mimetic.training.loop import lr_lambda


@pytest.fixture
def ws(tmp_path, tiny_model):
    return prepared_voice(tmp_path, tiny_model)


def cfg(tiny_model, **kw):
    return small_train_config(tiny_model, **kw)


def test_default_learning_rate_rule():
    assert default_learning_rate(2000) == pytest.approx(5e-4)
    assert default_learning_rate(576) == pytest.approx(5e-4 * (2000 / 576) ** 0.781)


def test_schedule_warmup_and_cosine():
    assert lr_lambda(0, 4, 20, "cosine") == pytest.approx(0.25)
    assert lr_lambda(4, 4, 20, "cosine") == pytest.approx(1.0)
    assert lr_lambda(12, 4, 20, "cosine") == pytest.approx(0.5)
    assert lr_lambda(20, 4, 20, "linear") == pytest.approx(0.0)


def test_training_lowers_held_out_nll_and_writes_run_files(ws, tiny_model):
    r = train(ws, cfg(tiny_model, max_steps=12, learning_rate=2e-2))
    assert r.best_nll < r.base_nll
    rows = [json.loads(x) for x in (r.run_dir / "metrics.jsonl").read_text().splitlines()]
    evals = [x for x in rows if "held_out_nll" in x]
    assert evals[0]["step"] == 0 and evals[-1]["step"] == 12
    assert evals[0]["held_out_ppl"] == pytest.approx(math.exp(evals[0]["held_out_nll"]))
    assert any("train_loss" in x and "tokens_per_s" in x for x in rows)
    assert (r.run_dir / "loss.png").read_bytes()[:4] == b"\x89PNG"
    assert (r.run_dir / "adapter" / "adapter_model.safetensors").exists()
    cfg_text = (r.run_dir / "config.toml").read_text()
    assert "lora_r = 4" in cfg_text and tiny_model in cfg_text
    summary = json.loads((r.run_dir / "summary.json").read_text())
    assert summary["held_out_nll_drop"] == pytest.approx(r.nll_drop) and summary["trainable_parameters"] > 0
    # every run starts with a plan line, measured on its own longest batch
    plan = summary["plan"]
    assert plan["fits"] and plan["peak_memory_mb"] > 100 and plan["tokens_per_s"] > 0 and plan["run_minutes"] > 0
    assert any("plan_epoch_min" in x for x in rows)


def test_early_stopping_ends_a_run_that_gets_worse(ws, tiny_model):
    # A learning rate far too high makes held-out NLL worse: training must stop early.
    r = train(ws, cfg(tiny_model, max_steps=60, learning_rate=3.0, eval_every=2, patience=2, max_grad_norm=0))
    assert r.stopped_because.startswith("early stopping")
    assert r.final_step < 60


def test_kept_adapter_is_the_best_evaluation_not_the_last(ws, tiny_model):
    # The learning rate warms up to far too high a value: held-out NLL first falls, then rises.
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from mimetic.models.loading import autocast, load_tokenizer
    from mimetic.models.nll import evaluate_nll
    from mimetic.corpus.prepare import load_split

    r = train(ws, cfg(tiny_model, max_steps=8, eval_every=2, patience=100, min_delta=0.0, learning_rate=20.0,
                      warmup_ratio=1.0, lr_schedule="linear", max_grad_norm=0))
    evals = [x for x in map(json.loads, (r.run_dir / "metrics.jsonl").read_text().splitlines()) if "held_out_nll" in x]
    nlls = {x["step"]: x["held_out_nll"] for x in evals}
    assert r.final_step == 8 and sorted(nlls) == [0, 2, 4, 6, 8]
    finite = {k: v for k, v in nlls.items() if math.isfinite(v)}  # too high a rate may end in NaN: worse still
    assert r.best_step == min(finite, key=finite.get) and r.best_nll == pytest.approx(finite[r.best_step], abs=1e-9)
    worse = lambda x: not x <= r.best_nll + 0.01  # noqa: E731 - NaN counts as worse
    assert r.best_step > 0 and worse(nlls[8]), nlls  # the last evaluation is worse: the kept adapter must not be the last
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model), str(r.run_dir / "adapter")).eval()
    kept = evaluate_nll(model, load_split(ws, "held_out"), load_tokenizer(tiny_model).pad_token_id, "cpu",
                        autocast("cpu", "fp32"))
    assert kept == pytest.approx(r.best_nll, abs=1e-4) and worse(nlls[8]) and kept != pytest.approx(nlls[8], abs=1e-2)


def test_final_model_is_kept_when_the_subset_finds_it_as_good(ws, tiny_model):
    # min_delta so large that no evaluation counts as an improvement: the kept adapter would stay
    # the step-0 one, but the final model is not worse by more than min_delta, so it is kept
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from mimetic.models.loading import autocast, load_tokenizer
    from mimetic.models.nll import evaluate_nll
    from mimetic.corpus.prepare import load_split

    r = train(ws, cfg(tiny_model, max_steps=4, eval_every=2, patience=100, min_delta=50.0, learning_rate=5e-2))
    assert r.best_step == r.final_step == 4 and r.best_nll < r.base_nll
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model), str(r.run_dir / "adapter")).eval()
    kept = evaluate_nll(model, load_split(ws, "held_out"), load_tokenizer(tiny_model).pad_token_id, "cpu",
                        autocast("cpu", "fp32"))
    assert kept == pytest.approx(r.best_nll, abs=1e-4)


def _lora(path):
    return load_file(str(path / "adapter_model.safetensors"))


def test_interrupted_run_resumes_to_the_same_weights(ws, tiny_model):
    c = cfg(tiny_model, max_steps=7, lora_dropout=0.1)
    full = train(ws, c)
    with pytest.raises(TrainingInterrupted, match="Resume with: mimetic train --resume"):
        train(ws, c, should_stop=lambda run: run.state.step == 3)
    stopped = sorted(p for p in ws.runs_dir.iterdir() if p.name != full.run_id)[-1].name
    resumed = train(ws, resume=stopped)
    assert resumed.run_id == stopped and resumed.final_step == 7
    a = torch.load(full.run_dir / "checkpoint" / "state.pt", weights_only=False)["lora"]
    b = torch.load(resumed.run_dir / "checkpoint" / "state.pt", weights_only=False)["lora"]
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-5), k
    assert resumed.best_nll == pytest.approx(full.best_nll, abs=1e-5)
    steps = [json.loads(x)["step"] for x in (resumed.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(steps)  # no duplicated tail from the interrupted part


def test_time_budget_stops_training(ws, tiny_model):
    r = train(ws, cfg(tiny_model, epochs=200, time_budget_min=0.1))
    summary = json.loads((r.run_dir / "summary.json").read_text())
    # the budget ended the run, or shrank its schedule (no wall-clock bound: a busy machine may overrun it)
    assert r.final_step < 200 * summary["steps_per_epoch"]
    assert r.stopped_because.startswith("time budget") or summary["planned_steps"] < 200 * summary["steps_per_epoch"]


def test_data_for_another_model_is_refused(ws, tiny_model):
    with pytest.raises(MimeticError, match="prepared for"):
        train(ws, cfg(tiny_model, base_model="embedded", max_steps=1))


def test_resume_without_checkpoint(ws):
    with pytest.raises(MimeticError, match="no training run"):
        train(ws, resume=True)


def test_length_grouped_batches_cover_every_row_once_with_less_padding():
    import random

    from mimetic.training.sft import epoch_batches, padding_share

    rng = random.Random(0)
    lengths = [rng.randint(20, 512) for _ in range(1001)]
    grouped = epoch_batches(lengths, TrainConfig(batch_size=4), 0)
    plain = epoch_batches(lengths, TrainConfig(batch_size=4, group_by_length=False), 0)
    for batches in (grouped, plain):
        assert len(batches) == 251 and sorted(i for b in batches for i in b) == list(range(1001))
        assert max(lengths[i] for i in batches[0]) == max(lengths)  # the memory peak comes first
    # nine rows, one block: the row left over is the shortest, so the first step is a full batch
    # (the plan measures the largest step there, not the longest row alone)
    nine = epoch_batches([100, 500, 300, 200, 400, 50, 450, 350, 250], TrainConfig(batch_size=4), 0)
    assert nine[0] == [7, 4, 6, 1] and [5] in nine and len(nine) == 3
    assert grouped == epoch_batches(lengths, TrainConfig(batch_size=4), 0)  # reproducible: exact resume
    assert grouped != epoch_batches(lengths, TrainConfig(batch_size=4), 1)  # reshuffled every epoch
    assert padding_share(lengths, grouped) < 0.08 < 0.3 < padding_share(lengths, plain)  # rounding up adds about 5%


def test_adamw_is_the_fused_kernel_on_a_cpu_and_makes_the_same_update():
    from mimetic.training.session import adamw

    torch.manual_seed(0)
    weights = [torch.randn(16, 24), torch.randn(24, 16)]
    grads = [torch.randn_like(w) for w in weights]
    fused = [torch.nn.Parameter(w.clone()) for w in weights]
    plain = [torch.nn.Parameter(w.clone()) for w in weights]
    opt = adamw(fused, 1e-2, 0.01)
    ref = torch.optim.AdamW(plain, lr=1e-2, weight_decay=0.01, foreach=False)
    assert opt.param_groups[0]["fused"] is True  # one kernel for every tensor, not a loop of ops
    for _ in range(3):
        for ps, o in ((fused, opt), (plain, ref)):
            for p, g in zip(ps, grads):
                p.grad = g.clone()
            o.step()
    for a, b, w in zip(fused, plain, weights):
        assert torch.allclose(a, b, atol=1e-6) and not torch.equal(a.detach(), w)
    ref.load_state_dict(opt.state_dict())  # a checkpoint of one loads into the other


def test_batch_lengths_are_rounded_to_few_shapes_with_little_padding():
    from mimetic.models.nll import collate, padded_length

    lengths = range(1, 2049)
    padded = [padded_length(n) for n in lengths]
    assert all(n <= p <= 1.125 * n + 7 for n, p in zip(lengths, padded))  # at most an eighth more (or 7 tokens)
    assert padded_length(512) == 512 and padded_length(463) == 480 and padded_length(532) == 576
    assert len(set(p for n, p in zip(lengths, padded) if 257 <= n <= 512)) == 8  # 256 lengths, 8 shapes
    batch = collate([{"input_ids": [5] * 300, "labels": [5] * 300}, {"input_ids": [6] * 10, "labels": [6] * 10}], 0)
    assert batch["input_ids"].shape == (2, 320) and int(batch["attention_mask"].sum()) == 310
    assert (batch["labels"][0, 300:] == -100).all() and (batch["input_ids"][1, 10:] == 0).all()


def test_packing_gives_the_same_nll_with_almost_no_padding(tiny_model):
    import random

    from transformers import AutoModelForCausalLM

    from mimetic.models.nll import collate, token_nll_sum
    from mimetic.training.sft import pack, padding_share

    rng = random.Random(0)
    rows = []
    for _ in range(9):
        ids = [rng.randrange(100, 5000) for _ in range(rng.randint(8, 60))]
        rows.append({"input_ids": ids, "labels": list(ids)})
    packed = pack(rows, 64)
    assert sorted(len(r["input_ids"]) for r in rows) != sorted(len(r["input_ids"]) for r in packed)
    assert sum(len(r["input_ids"]) for r in packed) == sum(len(r["input_ids"]) for r in rows)
    assert all(len(r["input_ids"]) <= 64 for r in packed) and len(packed) < len(rows)
    model = AutoModelForCausalLM.from_pretrained(tiny_model, attn_implementation="sdpa").eval()
    noop = torch.autocast("cpu", enabled=False)
    with torch.no_grad():
        one_by_one = [token_nll_sum(model, collate([r], 0), "cpu", lambda: noop) for r in rows]
        together = token_nll_sum(model, collate(packed, 0), "cpu", lambda: noop)
    assert together[1] == sum(c for _, c in one_by_one)
    assert float(together[0]) == pytest.approx(sum(float(s) for s, _ in one_by_one), rel=1e-5)
    lengths = [len(r["input_ids"]) for r in rows]
    plengths = [len(r["input_ids"]) for r in packed]
    assert padding_share(plengths, [list(range(len(packed)))]) < padding_share(lengths, [list(range(len(rows)))])


def test_training_with_packing(ws, tiny_model):
    r = train(ws, cfg(tiny_model, packing=True, max_steps=3))
    summary = json.loads((r.run_dir / "summary.json").read_text())
    assert summary["packed_rows"] < summary["steps_per_epoch"] * 2 * 4
    assert summary["padding_share"] <= summary["padding_share_unpacked"]
    assert math.isfinite(r.best_nll)


def test_plan_predicts_memory_and_time_from_a_warm_up(ws, tiny_model):
    from mimetic.training.sft import plan

    p = plan(ws, cfg(tiny_model, epochs=2))
    assert p.fits and p.peak_memory_mb > 100 and p.available_mb > p.peak_memory_mb
    # two epochs plus the step-0 evaluation
    assert p.tokens_per_s > 0 and 2 * p.epoch_minutes < p.run_minutes < 2.5 * p.epoch_minutes
    assert "peak memory" in p.summary()


def test_bf16_base_weights_halve_their_memory_and_train(ws, tiny_model):
    from mimetic.training.sft import lora_model

    c = cfg(tiny_model, max_steps=4, base_weights="bf16", precision="auto", learning_rate=2e-2)
    model, params = lora_model(c, "cpu", "bf16")
    frozen = {p.dtype for p in model.parameters() if not p.requires_grad}
    assert frozen == {torch.bfloat16} and {p.dtype for p in params} == {torch.float32}
    r = train(ws, c)
    summary = json.loads((r.run_dir / "summary.json").read_text())
    assert summary["precision"] == "bf16" and r.best_nll < r.base_nll
    with pytest.raises(MimeticError, match="base_weights"):
        TrainConfig(base_weights="bf16", precision="fp32")


def test_compiled_training_steps_match_eager(ws, tiny_model, monkeypatch, tmp_path):
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))
    eager = train(ws, cfg(tiny_model, max_steps=3, lora_dropout=0.0))
    compiled = train(ws, cfg(tiny_model, max_steps=3, lora_dropout=0.0, compile=True))
    assert compiled.best_nll == pytest.approx(eager.best_nll, rel=1e-4)
    assert any((tmp_path / "inductor").iterdir())  # the compiled code is cached for the next run


def test_in_run_evaluations_use_a_subset_and_the_base_model_is_measured_once(ws, tiny_model):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from mimetic.models.nll import evaluate_nll
    from mimetic.corpus.prepare import load_split
    from mimetic.training.sft import eval_subset

    held = [{"input_ids": r["input_ids"], "labels": r["labels"]} for r in load_split(ws, "held_out")]
    total = sum(len(r["input_ids"]) for r in held)
    c = cfg(tiny_model, max_steps=6, eval_every=3, eval_tokens=total // 4)
    subset = eval_subset(held, c.eval_tokens, c.seed)
    assert 0 < len(subset) < len(held) and subset == eval_subset(held, c.eval_tokens, c.seed)  # fixed and seeded
    first = train(ws, c)
    second = train(ws, c)
    lines = [[json.loads(x) for x in (r.run_dir / "metrics.jsonl").read_text().splitlines()] for r in (first, second)]
    step0 = [[x for x in rows if x["step"] == 0 and "held_out_nll" in x][0] for rows in lines]
    assert step0[0]["cached"] is False and step0[1]["cached"] and step0[1]["held_out_nll"] == step0[0]["held_out_nll"]
    # the base model's whole-split NLL is measured before the first step, with its subset NLL
    assert step0[0]["base_nll_whole"] == pytest.approx(first.base_nll, abs=1e-9) != step0[0]["held_out_nll"]
    whole = [x for x in lines[1] if "held_out_nll_whole" in x][0]
    # the summary's figures are on the whole split: the base model's is the same in both runs, and
    # the kept adapter scores its best_nll on the whole split
    assert first.base_nll == pytest.approx(second.base_nll, abs=1e-6) and whole["base_nll_whole"] == second.base_nll
    assert second.best_nll == whole["held_out_nll_whole"] != step0[1]["held_out_nll"]
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model), str(second.run_dir / "adapter"))
    assert evaluate_nll(model, held, 0, "cpu", lambda: contextlib.nullcontext()) == pytest.approx(second.best_nll, abs=1e-4)


def test_an_unnamed_run_that_measures_worse_does_not_replace_the_published_voice(ws, tiny_model):
    from mimetic.core.events import Warning

    good = train(ws, cfg(tiny_model, max_steps=12, learning_rate=2e-2))
    assert ws.published_run() == good.run_id and good.nll_drop > 0.001
    events = []
    worse = train(ws, cfg(tiny_model, max_steps=1, learning_rate=1e-6), on_event=events.append)  # learns nothing
    assert worse.nll_drop < good.nll_drop
    assert ws.published_run() == good.run_id  # the better voice stays the voice
    assert worse.run_id in ws.finished_runs() and ws.run_dir(worse.run_id) == worse.run_dir  # kept, usable by id
    said = [e for e in events if isinstance(e, Warning) and worse.run_id in e.message]
    assert len(said) == 1 and f"mimetic publish {worse.run_id}" in said[0].hint and "not published" in said[0].message
    asked = train(ws, cfg(tiny_model, max_steps=1, learning_rate=1e-6), publish=True)  # the writer asked: published
    assert ws.published_run() == asked.run_id
    better = train(ws, cfg(tiny_model, max_steps=12, learning_rate=2e-2, seed=7))  # measures better: published
    assert better.nll_drop > asked.nll_drop and ws.published_run() == better.run_id


def test_a_resumed_run_refuses_new_settings_naming_the_flags_given(ws, tiny_model):
    from typer.testing import CliRunner

    from mimetic.frontends.cli import app
    from mimetic.training.session import check_frozen

    check_frozen({"lr": None, "epochs": None})  # nothing given: nothing to refuse
    with pytest.raises(MimeticError, match=r"A resumed run keeps its settings: --4bit, --lr cannot change") as e:
        check_frozen({"lr": 1e-3, "4bit": True, "epochs": None})
    assert "mimetic train" in e.value.hint
    with pytest.raises(MimeticError, match="A resumed polish run keeps its settings: --beta cannot change"):
        check_frozen({"beta": 0.2}, polish=True)
    out = CliRunner().invoke(app, ["train", "--workspace", str(ws.root), "--resume", "latest", "--lr", "0.01", "--4bit"])
    assert out.exit_code != 0 and "--4bit, --lr cannot change" in out.output


def test_the_time_budget_sizes_the_in_run_subset_by_the_measured_speed():
    from mimetic.training.sft import MIN_EVAL_TOKENS, budgeted_eval_tokens

    # a fast machine: four evaluations of 4,096 tokens fit in 10% of 15 minutes
    assert budgeted_eval_tokens(4096, 15, 0.1, 2000) == 4096
    # a slow or busy one: the largest power of two whose four evaluations fit in the share
    size = budgeted_eval_tokens(4096, 1, 0.1, 100)
    assert size == MIN_EVAL_TOKENS == 256  # 150 tokens would fit: the floor
    size = budgeted_eval_tokens(4096, 5, 0.1, 300)
    assert 4 * size / 300 <= 0.1 * 5 * 60 < 4 * 2 * size / 300 and size & (size - 1) == 0
    assert budgeted_eval_tokens(4096, 0.1, 0.1, 1) == MIN_EVAL_TOKENS


def test_a_time_budget_holds_the_whole_run_measuring_included(ws, tiny_model, monkeypatch):
    # A machine that measures slowly, simulated: scoring the whole held-out split sleeps 3 s.
    # The base model's NLL is cached by a first run, so the budgeted run knows nothing of that
    # cost until it measures it; its whole wall time, the final whole-split pass included, must
    # stay within the budget (before the fix it ran past it by that final pass).
    import time as time_

    import mimetic.training.sft as sft
    from mimetic.corpus.prepare import load_split

    train(ws, cfg(tiny_model, max_steps=1))  # caches the base model's held-out NLL
    per_token = 3.0 / sum(len(r["input_ids"]) for r in load_split(ws, "held_out"))
    real = sft.per_example_nll

    def slow(model, rows, *a, **k):
        time_.sleep(per_token * sum(len(r["input_ids"]) for r in rows))
        return real(model, rows, *a, **k)

    monkeypatch.setattr(sft, "per_example_nll", slow)
    budget = 0.5  # minutes: well above one step and the final pass, even on a busy machine
    t = time_.perf_counter()
    r = train(ws, cfg(tiny_model, epochs=1000, time_budget_min=budget, eval_every=1000))
    wall = time_.perf_counter() - t
    summary = json.loads((r.run_dir / "summary.json").read_text())
    # the budget ended the run, or shrank its schedule to fit (it is re-planned after step 5)
    assert r.stopped_because.startswith("time budget") or summary["planned_steps"] < 1000 * summary["steps_per_epoch"]
    assert wall <= 60 * budget + 2, wall  # a little slack for writing the plot and the summary


def test_a_slow_held_out_pass_is_measured_on_a_sample_and_the_voice_still_trains(tmp_path, tiny_model, monkeypatch):
    # A busy machine, simulated: scoring the whole held-out split sleeps 20 s, so the base model's
    # pass and the final one would take 40 of the budget's 30 s (the Doyle run of issue 32: one
    # step). Both must be measured on one seeded sample that fits in max_whole_share, the run must
    # train on, and the summary must say how many held-out tokens were measured.
    import time as time_

    from peft import PeftModel  # noqa: F401 - loads PEFT before the clock starts
    from transformers import AutoModelForCausalLM

    import mimetic.training.sft as sft
    from mimetic.core.config import PrepareConfig
    from mimetic.core.events import Warning
    from mimetic.corpus.prepare import load_split
    from mimetic.models.nll import evaluate_nll

    ws = prepared_voice(tmp_path, tiny_model, prepare_config=PrepareConfig(max_tokens=64))  # many short passages
    held = [{"input_ids": r["input_ids"], "labels": r["labels"]} for r in load_split(ws, "held_out")]
    total = sum(len(r["input_ids"]) for r in held)
    per_token = 20.0 / total
    real = sft.per_example_nll

    def slow(model, rows, *a, **k):
        time_.sleep(per_token * sum(len(r["input_ids"]) for r in rows))
        return real(model, rows, *a, **k)

    monkeypatch.setattr(sft, "per_example_nll", slow)
    events = []
    c = cfg(tiny_model, epochs=1000, time_budget_min=0.5, eval_every=1000, eval_batch_size=2)
    r = train(ws, c, on_event=events.append)
    summary = json.loads((r.run_dir / "summary.json").read_text())
    assert r.final_step > 1, (r.final_step, r.stopped_because)
    assert summary["held_out_tokens"] == total and 0 < summary["held_out_tokens_measured"] < total / 2
    said = [e for e in events if isinstance(e, Warning) and "held-out tokens" in e.message]
    assert len(said) == 1 and f"of {total:,} held-out tokens" in said[0].message and "15% of the budget" in said[0].message
    assert "mimetic evaluate" in said[0].message
    # measuring stayed within its two shares (a quarter of the budget), with a little slack for a busy machine
    assert summary["eval_s"] <= 0.3 * 30, summary["eval_s"]
    # the base model and the voice were measured on the same sample: its base NLL is the base model's there
    state = torch.load(r.run_dir / "checkpoint" / "state.pt", weights_only=False)["state"]
    subset = sft.eval_subset(held, state["eval_tokens"], c.seed)
    sample = sft.measured_sample(held, state["sample_tokens"], c.seed, len(subset))
    assert set(subset) <= set(sample) and sum(len(held[i]["input_ids"]) for i in sample) == summary["held_out_tokens_measured"]
    monkeypatch.setattr(sft, "per_example_nll", real)
    base = AutoModelForCausalLM.from_pretrained(tiny_model)
    on_sample = evaluate_nll(base, [held[i] for i in sample], 0, "cpu", lambda: contextlib.nullcontext())
    assert r.base_nll == pytest.approx(on_sample, abs=1e-4)
    # without a time budget the whole split is measured (the base model's missing examples only)
    whole = train(ws, cfg(tiny_model, max_steps=1))
    summary = json.loads((whole.run_dir / "summary.json").read_text())
    assert summary["held_out_tokens_measured"] == summary["held_out_tokens"] == total
    assert whole.base_nll == pytest.approx(evaluate_nll(base, held, 0, "cpu", lambda: contextlib.nullcontext()), abs=1e-4)
