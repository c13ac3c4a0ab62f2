"""Several processes through torchrun + DDP (gloo on the CPU): the multi-GPU path, for real.

A driver wraps the project's own trainer (``capfuse train`` under torchrun, two ranks) with two
recorders: the rows each rank's training batches hold, and each rank's live parameters when its
last epoch ends (before every rank loads rank 0's best checkpoint, which would make them equal
whatever happened). With DDP the ranks train on disjoint halves of each epoch and end with the
same weights; a control run with DDP replaced by the bare model (no gradient all-reduce) ends
with different weights, which shows the check can fail.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from capfuse.cli import main
from capfuse.data.demo import make_demo

DRIVER = """
import json, os, sys
from pathlib import Path
import torch
import capfuse.models.loop as loop
import capfuse.models.net as net_mod

out, rank = Path(os.environ["DDP_RECORD"]), int(os.environ["RANK"])
live = {}
real_train_epochs, real_load = net_mod.train_epochs, loop.load_file

def train_epochs(settings, seed, net, Y, tr, va, test_rows, fold_dir, **kw):
    make_batch, batches = kw["make_batch"], []
    def recording(rows, flip):
        batches.append([int(r) for r in rows])
        return make_batch(rows, flip)
    live["net"] = net
    kw["make_batch"] = recording
    result = real_train_epochs(settings, seed, net, Y, tr, va, test_rows, fold_dir, **kw)
    (out / f"{fold_dir.name}-rank{rank}.json").write_text(json.dumps({"tr": [int(r) for r in tr], "batches": batches}))
    return result

def load_file(path, *a, **k):
    # The epochs are over: keep this rank's own weights before rank 0's checkpoint replaces them.
    module = live["net"].module if hasattr(live["net"], "module") else live["net"]
    # Parameters only: DDP gives every rank rank 0's buffers (batch-norm statistics) at the start
    # of each forward, so after the last step they differ by design until the next one.
    torch.save({n: p.detach().clone() for n, p in module.named_parameters()},
               out / f"{Path(path).parent.name}-rank{rank}.pt")
    return real_load(path, *a, **k)

net_mod.train_epochs, loop.load_file = train_epochs, load_file
if os.environ.get("NO_ALLREDUCE"):  # the control: each rank trains alone on its shard
    torch.nn.parallel.DistributedDataParallel = lambda module, **kw: module
from capfuse.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.fixture(scope="module")
def ddp_project(tmp_path_factory):
    root = tmp_path_factory.mktemp("ddp")
    data = root / "data" / "ddp"
    make_demo(data, n_train=32, n_test=8, size=64, seed=2)
    config = root / "ddp_model.yaml"
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
                # every fold row in every epoch (no inner split): the shards can be checked against
                # the fold's training rows, and the last epoch's weights are the model
                "train": {"epochs": 2, "batch_size": 4, "eval_batch_size": 16, "early_stop": "none"},
                "finetune_options": {"loader_threads": 1},
                "folds": {"k": 2},
            }
        )
    )
    assert main(["folds", "--data", str(data), "--root", str(root), "--config", str(config), "--quiet"]) == 0
    (root / "driver.py").write_text(DRIVER, encoding="utf-8")
    return root, data, config


def _torchrun(project, name: str, **env) -> tuple[Path, Path]:
    """``capfuse train`` on two ranks under its own root; returns (its run folder, its records)."""
    root, data, config = project
    own = root / name
    own.mkdir()
    (own / "folds").symlink_to(root / "folds")
    record = own / "record"
    record.mkdir()
    torchrun = Path(sys.executable).with_name("torchrun")
    cmd = [str(torchrun), "--standalone", "--nproc_per_node=2", str(root / "driver.py"), "train"]
    cmd += ["--data", str(data), "--root", str(own), "--config", str(config), "--quiet"]
    proc = subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        timeout=600,
        env={
            "OMP_NUM_THREADS": "1",
            "PATH": "/usr/bin:/bin",
            "HF_HUB_OFFLINE": "1",
            "DDP_RECORD": str(record),
            "PYTHONPATH": os.pathsep.join(sys.path),
            **env,
        },
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return own / "runs" / "ddp" / "ddp_net", record


def _weights(record: Path, fold: int) -> list[dict[str, torch.Tensor]]:
    return [torch.load(record / f"fold{fold}-rank{r}.pt", weights_only=True) for r in (0, 1)]


@pytest.mark.slow
def test_two_ranks_train_disjoint_shards_and_end_with_equal_weights(ddp_project):
    root = ddp_project[0]
    run, record = _torchrun(ddp_project, "ddp")
    log_lines = (run / "log.jsonl").read_text().splitlines()
    assert len(log_lines) == 2  # one record per fold: only rank 0 writes
    oof = pd.read_csv(run / "oof_logits.csv", dtype={"ImageID": str})
    folds = pd.read_csv(root / "folds" / "ddp.csv", dtype={"ImageID": str})
    assert sorted(oof["ImageID"]) == sorted(folds["ImageID"])
    assert (run / "fold0" / "best.safetensors").exists() and (run / "fold1" / "done.json").exists()

    for fold in (0, 1):
        seen = [json.loads((record / f"fold{fold}-rank{r}.json").read_text()) for r in (0, 1)]
        tr = seen[0]["tr"]
        assert seen[1]["tr"] == tr and len(tr) % 2 == 0
        per_epoch = len(tr) // 4 // 2  # batches of 4 over each rank's half
        for epoch in range(2):
            shards = [{r for b in s["batches"][epoch * per_epoch : (epoch + 1) * per_epoch] for r in b} for s in seen]
            assert not shards[0] & shards[1], f"fold {fold} epoch {epoch}: the ranks share rows"
            assert shards[0] | shards[1] == set(tr), f"fold {fold} epoch {epoch}: rows left out"
        # DDP all-reduced every step's gradients: both ranks hold the same weights.
        a, b = _weights(record, fold)
        assert a.keys() == b.keys()
        for name in a:
            torch.testing.assert_close(a[name], b[name], rtol=0, atol=1e-6, msg=name)


@pytest.mark.slow
def test_without_the_all_reduce_the_ranks_weights_differ(ddp_project):
    _, record = _torchrun(ddp_project, "no_allreduce", NO_ALLREDUCE="1")
    for fold in (0, 1):
        a, b = _weights(record, fold)
        moved = [n for n in a if not np.allclose(a[n].numpy(), b[n].numpy(), atol=1e-6)]
        assert moved, f"fold {fold}: ranks trained on different rows agree without DDP; the check above proves nothing"
