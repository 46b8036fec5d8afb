"""The training loop's seams: Run (state, runtime options), fit (any loss), events, stopping."""

import json
import math

import pytest
import torch

from conftest import prepared_voice, small_train_config
from mimetic import MimeticError, TrainConfig, TrainingInterrupted, Workspace, train
from mimetic.models.distributed import Dist
from mimetic.core.events import Finished, Metric, MetricsFile, Progress, Started
from mimetic.training.loop import Parts, Run, RunState, RuntimeOptions, fit, scheduler_for


@pytest.fixture
def ws(tmp_path, tiny_model):
    return prepared_voice(tmp_path, tiny_model)


def cfg(tiny_model, **kw):
    return small_train_config(tiny_model, **kw)


def test_events_stream_and_metrics_file_agree(ws, tiny_model):
    events = []
    r = train(ws, cfg(tiny_model, max_steps=5), on_event=events.append)
    metrics = [e for e in events if isinstance(e, Metric)]
    lines = MetricsFile(r.run_dir / "metrics.jsonl").read()
    assert [{"step": m.step, **m.values} for m in metrics] == lines  # metrics.jsonl is a sink of the stream
    progress = [e for e in events if isinstance(e, Progress) and e.stage == "train" and e.unit == "steps"]
    assert any(isinstance(e, Progress) and "base model" in e.message for e in events)  # said before it is measured
    assert [p.done for p in progress] == [1, 2, 3, 4, 5] and progress[-1].total == 5
    assert all(p.eta_s is not None and p.eta_s >= 0 for p in progress) and progress[-1].eta_s == 0
    assert any(isinstance(e, Finished) and e.stage == "plan" and e.message.startswith("Plan:") for e in events)
    assert any(isinstance(e, Started) and e.stage == "train" for e in events)
    # one tokens/s: the progress line's speed and the summary's count training time only, the same rule
    summary = json.loads((r.run_dir / "summary.json").read_text())
    assert summary["version"] == 1
    assert progress[-1].info["tokens_per_s"] == pytest.approx(summary["tokens_per_s"], rel=0.35)


def test_stop_file_checkpoints_and_resume_takes_new_runtime_options(ws, tiny_model):
    def stop_after_two(e):
        if isinstance(e, Progress) and e.stage == "train" and e.done == 2:
            run_dir = sorted(ws.runs_dir.iterdir())[-1]
            Run.request_stop(run_dir)  # what `mimetic stop` or the app's button does

    with pytest.raises(TrainingInterrupted, match="Resume with"):
        train(ws, cfg(tiny_model, max_steps=6), on_event=stop_after_two)
    run_id = sorted(p.name for p in ws.runs_dir.iterdir())[-1]
    assert not (ws.runs_dir / run_id / "stop").exists()
    with pytest.raises(MimeticError, match="cannot change"):
        Run.resume(ws, run_id, lora_r=8)
    events = []
    r = train(ws, resume=run_id, runtime={"eval_batch_size": 3, "device": "cpu"}, on_event=events.append)
    assert r.final_step == 6
    assert any(isinstance(e, Started) and e.message == f"resuming run {run_id} at step 2 of 6" for e in events)
    state = torch.load(r.run_dir / "checkpoint" / "state.pt", weights_only=False)["state"]
    sessions = state["sessions"]
    assert [s["step"] for s in sessions] == [0, 2]
    assert sessions[0]["options"]["eval_batch_size"] == 8 and sessions[1]["options"]["eval_batch_size"] == 3


def test_old_checkpoint_state_is_read():
    old = {"trainer": {"step": 7, "tokens": 900, "elapsed": 12.5, "eval_total_s": 2.0, "best_nll": 3.1, "base_nll": 3.4,
                       "best_step": 6, "bad_evals": 1, "win_loss": 0.5, "win_count": 3},
           "sched": {"total": 20, "planned": 30, "warmup": 1}}
    st = RunState.from_dict(old)
    assert (st.step, st.tokens, st.elapsed_s, st.eval_s, st.total_steps, st.planned_steps, st.warmup_steps) == (7, 900, 12.5, 2.0, 20, 30, 1)
    assert (st.best_nll, st.base_nll, st.best_step, st.bad_evals, st.window_count) == (3.1, 3.4, 6, 1, 3)
    with pytest.raises(MimeticError, match="newer"):
        RunState.from_dict({**st.to_dict(), "version": 99})


def test_fit_trains_any_loss(tmp_path):
    """fit is not tied to language models: here it fits y = 3x with a squared-error loss."""
    ws = Workspace.open(tmp_path / "voice")
    config = TrainConfig(batch_size=4, eval_every=5, patience=100, learning_rate=0.1, lr_schedule="constant",
                         warmup_ratio=0.0, max_grad_norm=0.0, log_every=5)
    run = Run.start(ws, config, RuntimeOptions.from_config(config), "toy")
    run.state.total_steps = run.state.planned_steps = 40
    torch.manual_seed(0)
    model = torch.nn.Linear(1, 1, bias=False)
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    parts = Parts(model, model, list(model.parameters()), opt, scheduler_for(opt, run), Dist("cpu"))
    data = [{"input_ids": [0], "x": float(i % 5) / 5} for i in range(20)]

    def loss_fn(m, rows):
        x = torch.tensor([[r["x"]] for r in rows])
        return ((m(x) - 3 * x) ** 2).sum(), len(rows)

    def evaluate(step):
        with torch.no_grad():
            return float((model.weight - 3).abs())

    saved = []
    stopped = fit(run, parts, loss_fn, lambda micro: data[(micro * 4) % 20:(micro * 4) % 20 + 4], evaluate,
                  save_best=lambda r: saved.append(r.state.step))
    assert stopped == "finished" and run.state.step == 40
    assert abs(float(model.weight.detach()) - 3) < 0.01
    assert saved and saved[-1] == run.state.best_step and run.state.best_nll < 0.01


def test_time_budget_spaces_evaluations_to_keep_measuring_within_its_share():
    import time
    from types import SimpleNamespace

    from mimetic.training.loop import RunState, TimeBudget

    class OneProcess:
        def min_int(self, x):
            return x

    def budget_run(eval_s, last_eval_s, reserve, share):
        # 10 minutes; 5 steps done at 1 s each; 1,000 steps planned, evaluation every 5 steps
        st = RunState(step=5, elapsed_s=5 + eval_s, eval_s=eval_s, planned_steps=1000, total_steps=1000,
                      last_eval_s=last_eval_s)
        run = SimpleNamespace(state=st, config=TrainConfig(eval_every=5))
        tb = TimeBudget(10, OneProcess(), started=time.perf_counter() - st.elapsed_s, reserve=lambda r: reserve,
                        eval_share=share)
        tb.replan(run)
        return st

    st = budget_run(eval_s=20, last_eval_s=4, reserve=16, share=0.1)  # 60 s for measuring: 24 left, 6 evaluations
    every = st.eval_at - st.step
    evals = math.ceil((st.total_steps - st.step) / every) - 1  # at step + k·every, before the last step
    assert every > 5 and evals == 6, (every, evals, st.total_steps)
    assert 600 - 25 - 16 - 6 * 4 - 1 <= st.total_steps - 5 <= 600 - 25 - 16 - 6 * 4  # the steps fill the rest
    run = SimpleNamespace(state=st, config=TrainConfig(eval_every=5))
    pending = st.eval_at
    st.step, st.elapsed_s = st.step + 5, st.elapsed_s + 5  # re-planned before the evaluation is due: it keeps its step
    TimeBudget(10, OneProcess(), started=time.perf_counter() - st.elapsed_s, reserve=lambda r: 16,
               eval_share=0.1).replan(run)
    assert st.eval_at == pending
    assert budget_run(eval_s=50, last_eval_s=4, reserve=16, share=0.1).eval_at == 0  # no room: none before the end
    assert budget_run(eval_s=20, last_eval_s=4, reserve=16, share=0.0).eval_at is None  # no share: every eval_every
    assert budget_run(eval_s=0, last_eval_s=0.01, reserve=0, share=0.1).eval_at == 10  # room for all: eval_every


def test_time_budget_reads_as_minutes_and_seconds():
    from mimetic.training.loop import human_minutes

    assert [human_minutes(m) for m in (2.39543, 15, 0.5, 1.0)] == ["2 min 24 s", "15 min", "30 s", "1 min"]
