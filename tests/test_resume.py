"""
Resume after a kill: train_net.py is killed with SIGKILL after a checkpoint, then run again with
--resume; training must go on from that checkpoint's iteration to the end and the evaluation.
"""
import json
import os
import signal
import subprocess
import sys
import time

from common import ROOT

MAX_ITER, PERIOD = 40, 10


def _train_net(output_dir, dataset_root, *extra):
    cmd = [
        sys.executable, str(ROOT / "train_net.py"),
        "--config-file", str(ROOT / "configs/quick_schedules/gln_R18_synthetic_smoke.yaml"),
        *extra,
        "SOLVER.MAX_ITER", str(MAX_ITER), "SOLVER.CHECKPOINT_PERIOD", str(PERIOD),
        "DATALOADER.NUM_WORKERS", "0", "OUTPUT_DIR", str(output_dir),
    ]
    env = dict(os.environ, DETECTRON2_DATASETS=dataset_root, OMP_NUM_THREADS="1")
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def test_kill_then_resume(synthetic_root, tmp_path):
    last = tmp_path / "last_checkpoint"
    first = _train_net(tmp_path, synthetic_root)
    deadline = time.time() + 240
    while not last.exists() and first.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert last.exists(), first.communicate()[0][-3000:]
    first.send_signal(signal.SIGKILL)
    first.communicate()
    assert first.returncode == -signal.SIGKILL
    checkpoint = last.read_text().strip()
    assert not (tmp_path / "model_final.pth").exists(), "the run ended before it was killed"
    killed_at = int(checkpoint[len("model_"):-len(".pth")])  # model_0000009.pth: after iter 9
    assert killed_at % PERIOD == PERIOD - 1

    second = _train_net(tmp_path, synthetic_root, "--resume")
    log = second.communicate(timeout=400)[0]
    assert second.returncode == 0, log[-3000:]
    assert f"Starting training from iteration {killed_at + 1}" in log
    # the add-on's own logger reaches the log too (the smoke config's CPU_AMP is "auto")
    assert "SOLVER.CPU_AMP.MODE 'auto': training in" in log
    assert (tmp_path / "model_final.pth").exists()
    records = [json.loads(line) for line in (tmp_path / "metrics.json").read_text().splitlines()]
    steps = [r["iteration"] for r in records if "total_loss" in r]
    assert steps[-1] == MAX_ITER - 1
    final = [r for r in records if "bbox/AP" in r]
    assert final and all(0 <= final[-1][k] <= 100 for k in ("bbox/AP", "bbox/AP50", "bbox/AR300"))
