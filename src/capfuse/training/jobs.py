"""(model, fold) jobs: the train stage's folds at once on many cores (joblib) or machines (Dask).

The parent caches every model's features and opens each run folder (``open_run``); a job is a
small picklable description (``FoldJob``: folders, config, model name, fold) that opens the
dataset and the memory-mapped feature caches itself and trains one fold (``train_fold``), writing
only that fold's folder. Completion order does not matter: the parent then calls ``train_model``,
which finds every fold done and assembles the OOF and test logits as a serial run does. A job
whose worker dies leaves its fold without ``done.json``: Dask runs it again on another worker, and
a rerun of the stage trains whatever is still missing.

Threads: a job sets its torch and BLAS threads to ``max(1, cores // slots)``, where ``slots`` is
how many jobs share the machine (``--jobs`` here; on Dask, the threads of every worker on the
host), so N jobs never oversubscribe the cores; ``--threads T`` sets T instead. A fold's bytes
do not depend on where it ran or in which order, but torch's CPU kernels split their sums by
thread count, so they do depend on its threads: a run with ``--threads T`` gives the same bytes
serially, with any ``--jobs`` and on Dask. Without ``--threads`` a serial run keeps torch's own
default (all cores), exactly as before jobs existed.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import joblib
import torch
from joblib.externals.loky.process_executor import TerminatedWorkerError
from threadpoolctl import threadpool_limits

from capfuse.data.dataset import load_dataset
from capfuse.features.store import FeatureStore
from capfuse.paths import Paths
from capfuse.training.cv import model_inputs, open_run, train_fold
from capfuse.training.pseudo import PseudoSource
from capfuse.utils.log import log
from capfuse.utils.timing import timed

# Seconds to wait for a Dask scheduler to answer, and then for its first worker.
CONNECT_TIMEOUT_S = 20
# Dask runs a job again when it raises (a worker's full disk, a lost file handle). A worker that
# dies mid-job is a separate count, the scheduler's ``distributed.scheduler.allowed-failures``
# (3 by default): its jobs move to other workers until then.
DASK_RETRIES = 2


@dataclass(frozen=True)
class Engine:
    """Where the folds run: serially in this process (the default), ``jobs`` local processes
    (joblib's loky), or the Dask cluster at ``scheduler`` (``tcp://host:8786``)."""

    jobs: int = 1
    scheduler: str | None = None
    threads: int | None = None  # per fold, serial or job; None: torch's default serially, cores // slots in jobs

    def __post_init__(self) -> None:
        if self.jobs < 1:
            raise ValueError(f"--jobs must be at least 1, got {self.jobs}")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"--threads must be at least 1, got {self.threads}")
        if self.scheduler is not None and not self.scheduler.strip():
            raise ValueError("--scheduler is empty: give a Dask scheduler address such as tcp://host:8786")

    @property
    def parallel(self) -> bool:
        return self.jobs > 1 or self.scheduler is not None

    def __str__(self) -> str:
        return f"Dask at {self.scheduler}" if self.scheduler else f"{self.jobs} local processes"


@dataclass(frozen=True)
class FoldJob:
    """One (model, fold) job: small and picklable, never arrays; the worker opens the files."""

    data_dir: Path  # absolute, like root: a worker on another machine reads the same shared paths
    root: Path
    cfg: dict  # the pipeline's config: how the dataset loads (strict, unlabelled folder)
    name: str
    model_cfg: dict  # as train_model gets it
    fold: int
    out_dir: Path
    with_extra: bool = False  # the unlabelled folder's rows join the features (models with rounds)
    pseudo_from: PseudoSource | None = None
    quiet: bool = True


def open_jobs(
    paths: Paths,
    cfg: dict,
    name: str,
    model_cfg: dict,
    common: dict,
    *,
    out_dir: Path,
    with_extra: bool,
    pseudo_from: PseudoSource | None = None,
    quiet: bool = True,
) -> list[FoldJob]:
    """Open ``name``'s run folder as ``train_model`` would (``open_run``) and describe a job for
    each fold it would still train. ``common``: ``model_inputs``' dict, built from the features
    the parent cached, so that no job computes them."""
    pending = open_run(name, model_cfg, out_dir=out_dir, pseudo_from=pseudo_from, **common)
    data = dict(cfg.get("data") or {})
    if data.get("unlabelled"):
        # A worker's working folder is not ours: it finds the unlabelled folder by its full path.
        data["unlabelled"] = str(Path(data["unlabelled"]).resolve())
    shared = {**cfg, "data": data} if data else cfg
    return [
        FoldJob(
            data_dir=paths.data_dir.resolve(),
            root=paths.root.resolve(),
            cfg=shared,
            name=name,
            model_cfg=model_cfg,
            fold=fold,
            out_dir=out_dir.resolve(),
            with_extra=with_extra,
            pseudo_from=pseudo_from,
            quiet=quiet,
        )
        for fold in pending
    ]


def job_threads(cores: int, slots: int) -> int:
    """Torch and BLAS threads of one job when ``slots`` jobs share ``cores``."""
    return max(1, cores // max(1, slots))


@contextmanager
def fold_threads(threads: int | None) -> Iterator[None]:
    """Torch and BLAS (the linear models' scikit-learn) use ``threads`` threads inside; None
    changes nothing. Restored on the way out: the command's later stages keep their own."""
    if threads is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with threadpool_limits(threads):
            yield
    finally:
        torch.set_num_threads(before)


def run_job(job: FoldJob, threads: int) -> tuple[str, int, bool]:
    """Train one fold in this process with ``threads`` threads; returns (model, fold, trained)."""
    if job.quiet:
        os.environ["CAPFUSE_QUIET"] = "1"  # no progress bars in a worker's log
    with fold_threads(threads):
        paths = Paths(data_dir=job.data_dir, root=job.root)
        ds = load_dataset(paths, job.cfg, quiet=job.quiet)
        # The parent cached these features: here they are read (memory-mapped), not computed.
        feats = FeatureStore(ds, job.quiet, {job.name: job.model_cfg}).for_model(job.model_cfg, job.with_extra)
        inputs = model_inputs(ds, ds.folds(), feats)
        trained = train_fold(
            job.name, job.model_cfg, job.fold, out_dir=job.out_dir, pseudo_from=job.pseudo_from, **inputs
        )
    return job.name, job.fold, trained


def run_jobs(jobs: list[FoldJob], engine: Engine, fn: Callable[[FoldJob, int], object] = run_job) -> None:
    """Run ``jobs`` on ``engine``; returns when every one has finished, raises when one failed.

    ``fn`` is the job itself (``run_job``; a test passes one that kills its worker first).
    """
    if not jobs:
        return
    with timed(f"train jobs ({len(jobs)} on {engine})"):
        if engine.scheduler:
            _run_dask(jobs, engine.scheduler, engine.threads, fn)
        else:
            _run_local(jobs, engine.jobs, engine.threads, fn)


def _run_local(jobs: list[FoldJob], n: int, threads: int | None, fn) -> None:
    cores = joblib.cpu_count()
    threads = threads or job_threads(cores, n)
    if threads * n > cores:
        log.warning("%d jobs of %d thread(s) each on %d cores: they will wait for one another", n, threads, cores)
    log.info("%d jobs on %d local processes, %d thread(s) each", len(jobs), n, threads)
    try:
        with joblib.parallel_config(backend="loky", inner_max_num_threads=threads):
            joblib.Parallel(n_jobs=min(n, len(jobs)))(joblib.delayed(fn)(job, threads) for job in jobs)
    except TerminatedWorkerError as exc:
        raise RuntimeError(
            "a training job's process died (out of memory or killed); the folds it was training "
            "have no done.json: run the same command again to train them"
        ) from exc


def _run_dask(jobs: list[FoldJob], address: str, fixed: int | None, fn) -> None:
    # Only SCHEDULER= runs need Dask, and importing it takes a second or two.
    from dask.distributed import Client, as_completed  # noqa: PLC0415 (optional engine, imported when used)

    try:
        client = Client(address, timeout=CONNECT_TIMEOUT_S)
    except (OSError, TimeoutError) as exc:
        raise ValueError(
            f"SCHEDULER={address}: no Dask scheduler answered within {CONNECT_TIMEOUT_S} s ({exc}); "
            f"start one with `dask scheduler` and workers with `dask worker {address}`"
        ) from exc
    with client:
        try:
            client.wait_for_workers(1, timeout=CONNECT_TIMEOUT_S)
        except TimeoutError as exc:
            raise ValueError(
                f"SCHEDULER={address}: the scheduler has no worker; start one with `dask worker {address}`"
            ) from exc
        threads = {} if fixed else _worker_threads(client)
        log.info("%d jobs on Dask at %s: %s", len(jobs), address, _describe(threads, fixed))
        futures = client.map(
            _on_dask_worker,
            jobs,
            fn=fn,
            threads=threads,
            fixed=fixed,
            code=code_identity(),
            retries=DASK_RETRIES,
            pure=False,
        )
        try:
            for future in as_completed(futures):
                name, fold, _ = future.result()  # a job's own error is raised here, after its retries
                log.info("%s fold %d: finished on Dask", name, fold)
        except BaseException:
            # Ctrl-C (or a job's error): the jobs not yet started must not go on writing into
            # the run folders after this command has stopped. Dask cannot stop a job mid-fold;
            # those finish their fold or are overwritten by the next run's same fold.
            pending = [f for f in futures if not f.done()]
            client.cancel(pending, force=True)
            log.warning("stopped: %d Dask jobs not finished were cancelled", len(pending))
            raise


def _worker_threads(client) -> dict[str, int]:
    """Each worker's threads per job: its host's cores over every job slot on that host (a host
    may run several worker processes, each with several slots)."""
    workers = client.scheduler_info(n_workers=-1)["workers"]
    cores = client.run(joblib.cpu_count)
    slots: dict[str, int] = {}
    for info in workers.values():
        slots[info["host"]] = slots.get(info["host"], 0) + int(info["nthreads"])
    return {addr: job_threads(cores.get(addr, 1), slots[info["host"]]) for addr, info in workers.items()}


def _describe(threads: dict[str, int], fixed: int | None) -> str:
    if fixed:
        return f"{fixed} thread(s) per job (--threads)"
    return ", ".join(f"{addr}: {n} thread(s) per job" for addr, n in sorted(threads.items()))


def code_identity() -> str:
    """A sha256 of the capfuse package's source as this process imported it (its version is in
    ``__init__.py``, so it is covered). A Dask worker started from another checkout (an older
    clone, an edited file) would train folds with other code into the same run folders, and
    nothing in the bytes would show it."""
    root = Path(__file__).resolve().parents[1]
    h = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        h.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes())
    return h.hexdigest()[:16]


def _on_dask_worker(job: FoldJob, fn, threads: dict[str, int], fixed: int | None, code: str | None = None):
    """``fn(job, threads)`` on the Dask worker this runs on, with that worker's thread count."""
    if code is not None and code != code_identity():
        raise ValueError(
            f"Dask worker at {os.uname().nodename} runs the capfuse source {code_identity()} from "
            f"{Path(__file__).resolve().parents[1]}, the client {code}: start every worker from the same "
            "checkout and virtual environment"
        )
    if fixed:
        return fn(job, fixed)
    from dask.distributed import get_worker  # noqa: PLC0415 (optional engine, imported when used)

    worker = get_worker()
    # A worker that joined after the jobs were sent: its own slots on its own cores.
    own = threads.get(worker.address) or job_threads(joblib.cpu_count(), worker.state.nthreads)
    return fn(job, own)
