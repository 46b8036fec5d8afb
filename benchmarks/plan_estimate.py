"""How close `--base-model auto`'s formulas (mimetic.models.hardware) come to a measured `train --plan`.

Runs the real plan (a short measured warm-up: peak memory, tokens/s) of a prepared voice and the
formula estimate for the same model, batch and example length on this machine, and prints both
with their ratio. The CPU's memory calibration (mimetic.models.hardware.MEMORY_CALIBRATION["cpu"]) is the
measured / estimated size of the variable part printed here, with the calibration set to 1.

    .venv/bin/python benchmarks/plan_estimate.py VOICE_FOLDER
"""

from __future__ import annotations

import sys
from pathlib import Path

from mimetic import Workspace
from mimetic.models import hardware
from mimetic.core.presets import catalog_entry
from mimetic.training.sft import plan


def main(folder: str) -> None:
    ws = Workspace.open(Path(folder), create=False)
    vc = ws.load_config()
    model = catalog_entry(vc.train.base_model)
    if model is None:
        raise SystemExit(f"{vc.train.base_model} is not in mimetic's catalog: no formula to compare with.")
    hw = hardware.probe(vc.train.device)
    measured = plan(ws, vc.train)
    seq = vc.prepare.max_tokens
    est = {}
    for factor in (1.0, hardware.MEMORY_CALIBRATION[hw.device]):
        hardware.MEMORY_CALIBRATION[hw.device] = factor
        est[factor] = hardware.estimate_memory_gb(model, hw.device, hw.precision, vc.train.batch_size, seq, vc.train.lora_r)
    speed = hardware.estimate_tokens_per_s(model, hw, seq)
    fixed = hardware.estimate_memory_gb(model, hw.device, hw.precision, 0, seq, vc.train.lora_r)
    peak_gb = measured.peak_memory_mb * 2**20 / 1e9
    print(hw.describe())
    print(f"{model.id}, batch {vc.train.batch_size} × {seq} tokens, {hw.precision}")
    print(f"peak memory: measured {peak_gb:.2f} GB; formula {est[1.0]:.2f} GB uncalibrated, "
          f"{est[max(est)]:.2f} GB calibrated ({hardware.MEMORY_CALIBRATION[hw.device]})")
    print(f"variable part: measured {peak_gb - fixed:.2f} GB / formula {est[1.0] - fixed:.2f} GB = "
          f"{(peak_gb - fixed) / (est[1.0] - fixed):.2f} (the calibration factor)")
    print(f"tokens/s: measured {measured.tokens_per_s:.0f}, formula {speed:.0f} ({speed / measured.tokens_per_s:.2f}×)")


if __name__ == "__main__":
    main(sys.argv[1])
