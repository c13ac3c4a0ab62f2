"""``capfuse bench --only jobs``: the speed-up of (model, fold) jobs run side by side.

The same model is trained serially (``--threads 1``) and as ``--jobs N`` (one thread per job),
each time in a fresh project folder holding only ``folds/`` and the dataset's feature cache,
so every run trains all folds from the same cached inputs and nothing is skipped. Rounds
alternate the two, so a drift in the machine's load touches both; medians are reported.

Each run is the ``capfuse train`` command itself, in a subprocess: the figure includes what a
user pays (interpreter start, torch import, dataset load, each job process's own start).
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _fresh_root(project: Path, dataset: str, into: Path) -> Path:
    """A project folder with the fold file and the feature cache only (cache files are hard
    links where the filesystem allows: read-only inputs, no copy of gigabytes)."""
    root = into / f"root-{time.monotonic_ns()}"
    (root / "folds").mkdir(parents=True)
    shutil.copy2(project / "folds" / f"{dataset}.csv", root / "folds" / f"{dataset}.csv")
    src = project / "runs" / dataset / "cache"
    shutil.copytree(src, root / "runs" / dataset / "cache", copy_function=_link_or_copy)
    return root


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _timed_train(data: Path, root: Path, model: str, config: Path, jobs: int) -> float:
    entry = "import sys; from capfuse.cli import main; sys.exit(main())"
    cmd = [sys.executable, "-c", entry, "train", "--data", str(data), "--root", str(root)]
    cmd += ["--config", str(config), "--only", model, "--threads", "1", "--quiet"]
    if jobs > 1:
        cmd += ["--jobs", str(jobs)]
    start = time.perf_counter()
    done = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:  # a timing of a failed run means nothing: say why it failed
        raise RuntimeError(f"capfuse train --only {model} (jobs {jobs}) failed:\n{done.stderr[-2000:]}")
    return elapsed


def bench_jobs(
    data: Path, config: Path, model: str, *, jobs: int = 2, rounds: int = 3, project: Path = Path(".")
) -> dict:
    """Median wall seconds of ``capfuse train --only model`` serially and with ``--jobs``."""
    dataset = data.name
    if not (project / "runs" / dataset / "cache").is_dir():
        raise FileNotFoundError(
            f"{project / 'runs' / dataset / 'cache'}: no feature cache; run `make train DATA={data}` first"
        )
    times: dict[int, list[float]] = {1: [], jobs: []}
    with tempfile.TemporaryDirectory(prefix="capfuse-bench-jobs-") as tmp:
        for _ in range(rounds):
            for n in (1, jobs):
                root = _fresh_root(project, dataset, Path(tmp))
                times[n].append(_timed_train(data.resolve(), root, model, config.resolve(), n))
                shutil.rmtree(root)
    serial, parallel = statistics.median(times[1]), statistics.median(times[jobs])
    return {
        "model": model,
        "jobs": jobs,
        "serial_s": serial,
        "parallel_s": parallel,
        "speedup": serial / parallel,
        "cores": os.cpu_count(),
        "load": os.getloadavg(),
        "rounds": rounds,
    }


def print_jobs(r: dict) -> None:
    print(
        f"train {r['model']} over every fold, one thread per job, {r['cores']} cores "
        f"(median of {r['rounds']} alternating rounds, each in a fresh project folder):"
    )
    print(f"  JOBS=1        : {r['serial_s']:7.1f} s")
    print(f"  JOBS={r['jobs']:<9}: {r['parallel_s']:7.1f} s   speed-up {r['speedup']:.2f}x")
    print(f"  load average after: {' '.join(f'{x:.1f}' for x in r['load'])}")
