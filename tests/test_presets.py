"""Presets, the hardware probe and ``--base-model auto`` (issue 18), and the device paths behind
them: 16-bit weights on a GPU, bf16 on Macs that have it, loss scaling for fp16."""

from __future__ import annotations

import json
import tomllib

import pytest
from typer.testing import CliRunner

from conftest import make_corpus, prepared_voice, trained_voice
from mimetic import MimeticError, Workspace
from mimetic.frontends.cli import app
from mimetic.core.config import EMBEDDED_MODEL, TrainConfig, VoiceConfig
from mimetic.models.hardware import Hardware, estimate_memory_gb, recommend
from mimetic.core.presets import BASE_MODELS, PRESETS, catalog_entry

runner = CliRunner()


def test_a_preset_is_written_into_mimetic_toml_and_the_command_line_wins(tmp_path):
    from mimetic.pipeline import choose_settings

    ws = Workspace.open(tmp_path / "v")
    events = []
    vc, rec = choose_settings(ws, preset="qwen3b-8gb", lora_r=8, prepare_changes={"max_tokens": 256}, on_event=events.append)
    import torch

    from mimetic.core.events import Warning as Warn

    warned = [e for e in events if isinstance(e, Warn) and e.stage == "preset"]
    assert bool(warned) == (not torch.cuda.is_available())  # no NVIDIA GPU here: said at once, with what to do
    assert not warned or ("8 GB" in warned[0].message and "--base-model auto" in warned[0].hint)
    saved = tomllib.loads(ws.config_path.read_text())
    assert rec is None  # a named model: nothing probed
    assert saved["train"]["preset"] == "qwen3b-8gb" and saved["train"]["base_model"] == "Qwen/Qwen2.5-3B-Instruct"
    assert saved["train"]["load_in_4bit"] is True and saved["train"]["learning_rate"] == 2e-4
    assert saved["train"]["batch_size"] == 1 and saved["train"]["grad_accum"] == 4 and saved["train"]["lr_schedule"] == "cosine"
    assert saved["train"]["lora_r"] == 8 and saved["train"]["lora_alpha"] == 32  # the option won, the rest is the preset's
    assert saved["prepare"]["format"] == "chat" and saved["prepare"]["max_tokens"] == 256
    assert saved["export"]["quantizations"] == ["q4_k_m"]
    assert saved["generate"] == VoiceConfig().to_dict()["generate"]  # untouched sections stay as they were
    # the Llama preset's learning rate is the hidden-size rule of the account, and it trains on briefs for 3 epochs
    llama = PRESETS["llama8b-gpu"]
    assert llama.train["learning_rate"] == pytest.approx(5e-5 * 10 * (2000 / 4096) ** 0.781, rel=1e-4)
    assert llama.train["epochs"] == 3 and llama.train["lr_schedule"] == "linear" and llama.prepare["format"] == "brief"


def test_presets_are_listed_and_an_unknown_one_is_refused_with_the_names(tmp_path):
    r = runner.invoke(app, ["presets"])
    assert r.exit_code == 0
    for name, p in PRESETS.items():
        assert name in r.output and p.base_model in r.output
    r = runner.invoke(app, ["presets", "gpt5-laptop"])
    assert r.exit_code != 0 and "phi2-mac" in r.output and "Traceback" not in r.output
    r = runner.invoke(app, ["voice", str(make_corpus(tmp_path / "writing", n_docs=2)), "-w", str(tmp_path / "v"), "--preset", "nope"])
    assert r.exit_code != 0 and "qwen3b-8gb" in r.output and not (tmp_path / "v" / "corpus").exists()


def test_training_with_a_preset_on_data_prepared_otherwise_says_to_prepare_first(tmp_path, tiny_model):
    ws = prepared_voice(tmp_path, tiny_model)
    r = runner.invoke(app, ["train", "-w", str(ws.root), "--preset", "phi2-mac"])
    assert r.exit_code != 0 and "mimetic prepare --preset phi2-mac" in r.output and "Traceback" not in r.output


def _gpu(memory_gb: float, four_bit: bool = True) -> Hardware:
    return Hardware("cuda", "test GPU", memory_gb, 8, "fp16", 50_000.0, four_bit)


def test_auto_picks_the_largest_model_that_fits_and_is_on_this_machine(monkeypatch):
    import mimetic.models.hardware as hw

    monkeypatch.setattr(hw, "is_available", lambda model_id: True)
    rec = recommend(TrainConfig(), 512, 2_000_000, _gpu(8))
    assert rec.chosen.model.id == "Qwen/Qwen2.5-3B-Instruct" and rec.chosen.four_bit  # 16-bit does not fit 8 GB
    assert rec.chosen.batch_size == 1 and rec.chosen.grad_accum == 4 and rec.preset == "qwen3b-8gb"
    assert not next(e for e in rec.estimates if e.model.id == "meta-llama/Llama-3.1-8B").fits_memory
    assert rec.lines()[0].startswith("This machine: test GPU") and any(ln.startswith(" → Qwen/Qwen2.5-3B") for ln in rec.lines())
    big = recommend(TrainConfig(), 512, 2_000_000, _gpu(80))
    assert big.chosen.model.id == "meta-llama/Llama-3.1-8B" and not big.chosen.four_bit
    no_bnb = recommend(TrainConfig(), 512, 2_000_000, _gpu(8, four_bit=False))
    assert no_bnb.chosen.model.params < 3e9 and not no_bnb.chosen.four_bit

    # offline and nothing downloaded: the best is named with its download, the embedded model is used
    monkeypatch.setattr(hw, "is_available", lambda model_id: model_id == EMBEDDED_MODEL)
    rec = recommend(TrainConfig(), 512, 2_000_000, _gpu(8))
    assert rec.chosen.model.id == EMBEDDED_MODEL and rec.best.model.id == "Qwen/Qwen2.5-3B-Instruct"
    assert any("mimetic prepare --base-model Qwen/Qwen2.5-3B-Instruct" in ln for ln in rec.lines())

    # a slow CPU and a 15-minute budget: nothing trains the corpus in time, the smallest trains what it can
    cpu = Hardware("cpu", "test CPU", 16, 2, "fp32", 200.0, False)
    rec = recommend(TrainConfig(time_budget_min=15), 512, 2_000_000, cpu)
    assert rec.chosen.model.id == EMBEDDED_MODEL and not rec.chosen.fits_time
    assert any("No listed model" in ln for ln in rec.lines())
    assert recommend(TrainConfig(time_budget_min=15), 512, 20_000, cpu).chosen.fits  # a small corpus fits


def test_memory_estimates_agree_with_the_accounts_machines():
    qwen, phi, llama = (catalog_entry(m) for m in ("Qwen/Qwen2.5-3B-Instruct", "microsoft/phi-2", "meta-llama/Llama-3.1-8B"))
    # the account trained Qwen2.5-3B in 4-bit, batch 1, on an 8 GB RTX 2070 (fp16: no bf16 on Turing)
    assert estimate_memory_gb(qwen, "cuda", "fp16", 1, 512, 16, four_bit=True) * 1.1 < 8
    assert estimate_memory_gb(qwen, "cuda", "fp16", 1, 512, 16, four_bit=False) > 8  # and needed the 4 bits to
    # Phi-2 with LoRA on a 16 GB M1: 16-bit weights, batch 1 × 512, within MPS's working set (about 2/3 of 16 GB)
    assert estimate_memory_gb(phi, "mps", "fp16", 1, 512, 16) * 1.1 < 16 * 2 / 3
    assert estimate_memory_gb(llama, "cuda", "bf16", 2, 1024, 16) * 1.1 < PRESETS["llama8b-gpu"].memory_gb
    sizes = [m.params for m in BASE_MODELS]
    assert sizes == sorted(sizes) and catalog_entry("embedded").id == EMBEDDED_MODEL


def test_train_plan_prints_the_recommendation_for_this_machine(tmp_path, tiny_model):
    ws = prepared_voice(tmp_path, tiny_model)
    r = runner.invoke(app, ["train", "-w", str(ws.root), "--plan", "--base-model", tiny_model, "--batch-size", "2"])
    assert r.exit_code == 0, r.output
    assert "This machine:" in r.output and "GFLOP/s measured" in r.output and EMBEDDED_MODEL in r.output
    assert "Plan: peak memory" in r.output
    assert tomllib.loads(ws.config_path.read_text())["train"].get("batch_size", 4) == 4  # a plan changes nothing


def test_auto_offline_falls_back_to_the_embedded_model(tmp_path, monkeypatch):
    from mimetic import ingest
    from mimetic.core.events import Finished
    from mimetic.pipeline import choose_settings

    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-hf-cache"))  # nothing downloaded
    ws = Workspace.open(tmp_path / "v")
    ingest([make_corpus(tmp_path / "writing", n_docs=6)], ws)
    events = []
    vc, rec = choose_settings(ws, base_model="auto", on_event=events.append)
    assert vc.train.base_model == EMBEDDED_MODEL and rec.chosen.model.id == EMBEDDED_MODEL
    assert tomllib.loads(ws.config_path.read_text())["train"]["base_model"] == EMBEDDED_MODEL
    said = [e for e in events if isinstance(e, Finished) and e.stage == "base model"]
    assert said and "Your writing: about" in said[0].message and rec.corpus_tokens > 1000


def test_gpu_weights_are_16_bit_and_macs_use_bf16_where_they_have_it(monkeypatch):
    import mimetic.models.loading as models
    from mimetic.models.loading import pick_precision, weights_dtype

    assert weights_dtype("mps", "fp16") == "float16" and weights_dtype("mps", "bf16") == "bfloat16"
    assert weights_dtype("cuda", "fp16") == "float16" and weights_dtype("cuda", "bf16") == "bfloat16"
    assert weights_dtype("cpu", "fp16") == "float32" and weights_dtype("cpu", "fp32") == "float32"
    assert weights_dtype("cpu", "bf16") == "bfloat16" and weights_dtype("cuda", "bf16", "fp32") == "float32"
    monkeypatch.setattr(models, "_mps_bf16", lambda: True)
    assert pick_precision("mps") == "bf16"
    monkeypatch.setattr(models, "_mps_bf16", lambda: False)
    assert pick_precision("mps") == "fp16"
    with pytest.raises(MimeticError, match="not Apple's"):
        models.load_model("embedded", "mps", "fp16", load_in_4bit=True)


def test_fp16_training_scales_the_loss_and_keeps_the_scaler_in_the_checkpoint(tmp_path, tiny_model):
    import torch

    ws = trained_voice(tmp_path, tiny_model, max_steps=4, eval_every=2, learning_rate=5e-2, precision="fp16", checkpoint_every=2)
    run = next((ws.root / "runs").iterdir())
    state = torch.load(run / "checkpoint" / "state.pt", weights_only=False)
    assert state["grad_scaler"]["scale"] > 1 and state["grad_scaler"]["_growth_tracker"] == 4  # four unskipped steps
    summary = json.loads((run / "summary.json").read_text())
    assert summary["precision"] == "fp16" and summary["best_nll"] < summary["base_nll"]


@pytest.mark.parametrize("bf16_s, fp32_s, faster, most_bf16_calls", [(0.6, 0.0, False, 1), (0.0, 0.01, True, 12)])
def test_the_cpu_bf16_probe_stops_timing_bf16_once_it_cannot_win(monkeypatch, bf16_s, fp32_s, faster, most_bf16_calls):
    """On a CPU without bf16 instructions one probe matmul took 0.74 s (50× fp32): the probe
    gives up on bf16 after its first call instead of timing twelve (9 s a process)."""
    import time

    import torch

    import mimetic.models.loading as models

    calls = {torch.bfloat16: 0, torch.float32: 0}

    def matmul(a, b):  # a stand-in CPU: each dtype's matmul takes the given time
        calls[a.dtype] += 1
        time.sleep(bf16_s if a.dtype == torch.bfloat16 else fp32_s)
        return a

    monkeypatch.setattr(torch.Tensor, "__matmul__", matmul)
    monkeypatch.setattr(models, "_BF16_FASTER", None)
    assert models.cpu_bf16_is_faster() is faster
    assert calls[torch.float32] == 12 and 1 <= calls[torch.bfloat16] <= most_bf16_calls
