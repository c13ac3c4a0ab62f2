"""(model, fold) jobs on local processes and on a Dask cluster give the serial run's bytes.

One linear and one torch model of the tiny dataset, trained serially for reference, then again
with ``--jobs 2`` (joblib) and through a two-worker Dask cluster on the loopback address; a job
that kills its own worker is run again by Dask and the run still equals the serial one.
"""

from __future__ import annotations

import os
import shutil
import signal
from pathlib import Path

import pytest
from dask.distributed import LocalCluster

from capfuse.cli import main
from capfuse.config import load_config
from capfuse.data.dataset import load_dataset
from capfuse.features.store import FeatureStore
from capfuse.paths import Paths
from capfuse.training import jobs as jobs_module
from capfuse.training.cv import model_inputs
from capfuse.training.jobs import Engine, job_threads, open_jobs, run_job, run_jobs
from capfuse.training.selection import select_models

MODELS = ("caption_linear", "image_mlp")
# Every run of this file: the tiny run's settings, a torch model among them, few epochs, and one
# thread per fold: torch's sums depend on the thread count, and the runs compared must share it.
SETS = ("folds.k=3", "models=[caption_linear,image_linear,image_mlp]", "train.epochs=3")
ARGS = (*(a for s in SETS for a in ("--set", s)), "--threads", "1", "--only", *MODELS)


def train(project: Path, data: Path, config: Path, *extra: str) -> int:
    argv = ["train", "--data", str(data), "--root", str(project), "--config", str(config), "--quiet"]
    return main([*argv, *ARGS, *extra])


def logits(project: Path) -> dict[str, bytes]:
    runs = project / "runs" / "tiny"
    return {f"{m}/{f}": (runs / m / f).read_bytes() for m in MODELS for f in ("oof_logits.csv", "test_logits.csv")}


@pytest.fixture(scope="module")
def serial(tiny_run, tmp_path_factory):
    """The tiny run with MODELS trained serially: the reference, and a project to copy."""
    run = tiny_run.copy(tmp_path_factory.mktemp("jobs") / "serial", share_data=True)
    assert train(run.root, run.data, run.config) == 0
    return run


@pytest.fixture
def fresh(serial, tmp_path):
    """A copy of the serial project without MODELS' runs (features stay cached)."""
    run = serial.copy(tmp_path / "project", share_data=True)
    for m in MODELS:
        shutil.rmtree(run.root / "runs" / "tiny" / m)
    return run


@pytest.fixture(scope="module")
def cluster():
    with LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None
    ) as local:
        yield local


def test_local_jobs_give_the_serial_bytes(serial, fresh):
    assert train(fresh.root, fresh.data, fresh.config, "--jobs", "2") == 0
    assert logits(fresh.root) == logits(serial.root)


def test_dask_jobs_give_the_serial_bytes(serial, fresh, cluster):
    assert train(fresh.root, fresh.data, fresh.config, "--scheduler", cluster.scheduler_address) == 0
    assert logits(fresh.root) == logits(serial.root)


def test_a_killed_worker_is_replaced_and_the_run_equals_the_serial_one(serial, fresh, cluster, tmp_path):
    marker = tmp_path / "killed-once"

    def dies_once(job, threads):
        # The first attempt at image_mlp fold 1 kills its own worker process mid-job.
        if job.name == "image_mlp" and job.fold == 1 and not marker.exists():
            marker.touch()
            os.kill(os.getpid(), signal.SIGKILL)
        return run_job(job, threads)

    cfg = load_config(str(fresh.config), list(SETS))
    paths = Paths(data_dir=fresh.data, root=fresh.root)
    ds = load_dataset(paths, cfg, quiet=True)
    store = FeatureStore(ds, True)
    jobs = []
    for name, model_cfg in select_models(cfg, fresh.config, list(MODELS)).items():
        common = model_inputs(ds, ds.folds(), store.for_model(model_cfg))
        plain = {k: v for k, v in model_cfg.items() if k != "pseudo"}
        jobs += open_jobs(paths, cfg, name, plain, common, out_dir=paths.model_dir(name), with_extra=False)
    run_jobs(jobs, Engine(scheduler=cluster.scheduler_address, threads=1), fn=dies_once)
    assert marker.exists()
    assert (fresh.root / "runs" / "tiny" / "image_mlp" / "fold1" / "done.json").exists()
    # The serial stage finds every fold done and only assembles them.
    assert train(fresh.root, fresh.data, fresh.config) == 0
    assert logits(fresh.root) == logits(serial.root)


def test_threads_per_job_split_the_cores():
    assert [job_threads(8, n) for n in (1, 2, 3, 8, 16)] == [8, 4, 2, 1, 1]


def test_an_unreachable_scheduler_is_named(monkeypatch, serial):
    monkeypatch.setattr(jobs_module, "CONNECT_TIMEOUT_S", 1)
    job = jobs_module.FoldJob(serial.data, serial.root, {}, "caption_linear", {}, 0, serial.root)
    with pytest.raises(ValueError, match="tcp://127.0.0.1:9"):
        run_jobs([job], Engine(scheduler="tcp://127.0.0.1:9"))
