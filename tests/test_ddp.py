"""Several processes through torchrun + DDP (gloo on the CPU): the multi-GPU path, for real."""

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from capfuse.cli import main
from capfuse.data.demo import make_demo


@pytest.mark.slow
def test_torchrun_two_processes_train_one_model(tmp_path):
    data = tmp_path / "data" / "ddp"
    make_demo(data, n_train=32, n_test=8, size=64, seed=2)
    config = tmp_path / "ddp_model.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "kind": "net",
                "name": "ddp_net",
                "inputs": ["image"],
                "finetune": True,
                "device": "cpu",
                "image_encoder": {"name": "mobilenetv2_050", "weights": "none", "size": 64, "grid": 2},
                "image_head": {"kind": "mlp", "hidden": 16},
                "train": {"epochs": 2, "batch_size": 8, "eval_batch_size": 16},
                "finetune_options": {"loader_threads": 1},
                "folds": {"k": 2},
            }
        )
    )
    assert main(["folds", "--data", str(data), "--root", str(tmp_path), "--config", str(config), "--quiet"]) == 0
    torchrun = Path(sys.executable).with_name("torchrun")
    cmd = [
        str(torchrun),
        "--standalone",
        "--nproc_per_node=2",
        "-m",
        "capfuse.cli",
        "train",
        "--data",
        str(data),
        "--root",
        str(tmp_path),
        "--config",
        str(config),
        "--quiet",
    ]
    proc = subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        timeout=600,
        env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = tmp_path / "runs" / "ddp" / "ddp_net"
    log_lines = (run / "log.jsonl").read_text().splitlines()
    assert len(log_lines) == 2  # one record per fold: only rank 0 writes
    oof = pd.read_csv(run / "oof_logits.csv", dtype={"ImageID": str})
    folds = pd.read_csv(tmp_path / "folds" / "ddp.csv", dtype={"ImageID": str})
    assert sorted(oof["ImageID"]) == sorted(folds["ImageID"])
    assert (run / "fold0" / "best.safetensors").exists() and (run / "fold1" / "done.json").exists()
