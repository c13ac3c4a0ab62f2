"""``capfuse bench --only linear``: the linear models' joint logistic fit by BLAS threads.

One fold of the linear fusion at competition size: 24,000 training rows (4/5 of 30,000) of the
multi-level image vector (2,864 standardised columns) beside a sparse TF-IDF block, 18 classes,
fitted by ``capfuse.models.logistic.fit_ovr``. Threads change the cost of an iteration, not the
iterations, so each thread count runs the same fixed number of L-BFGS iterations; rounds
alternate the counts and medians are printed, with each count's time over one thread's.
"""

from __future__ import annotations

import os
import statistics
import time

import numpy as np
import scipy.sparse as sp
from threadpoolctl import threadpool_limits

from capfuse.models.logistic import Design, fit_ovr

ROWS = 24_000
DENSE = 2_864  # the multi-level vector of Lite0: mean and max of the final map, means of two earlier maps
SPARSE, DENSITY = 20_000, 0.0005  # TF-IDF columns, and about ten terms a caption
CLASSES = 18
ITERATIONS = 20


def bench_linear(rows: int = ROWS, rounds: int = 3, iterations: int = ITERATIONS) -> dict:
    """Median seconds of ``iterations`` L-BFGS iterations per BLAS thread count (1, 2 and every core)."""
    rng = np.random.default_rng(0)
    dense = rng.normal(size=(rows, DENSE)).astype(np.float32)
    words = sp.random(rows, SPARSE, density=DENSITY, format="csr", random_state=0, dtype=np.float64)
    signal = dense[:, :CLASSES] + rng.normal(size=(rows, CLASSES)).astype(np.float32)
    Y = (signal > 1.0).astype(np.uint8)  # a learnable target: each class leans on one column
    design = Design(dense, words)
    counts = sorted({1, min(2, os.cpu_count() or 1), os.cpu_count() or 1})
    seconds: dict[int, list[float]] = {t: [] for t in counts}
    for r in range(rounds):
        for threads in counts if r % 2 == 0 else counts[::-1]:
            with threadpool_limits(threads, user_api="blas"):
                t0 = time.perf_counter()
                # tol 0: no early stop, so every count runs the same iterations.
                fit_ovr(design, Y, C=0.1, max_iter=iterations, tol=0.0)
                seconds[threads].append(time.perf_counter() - t0)
    med = {t: statistics.median(s) for t, s in seconds.items()}
    return {
        "rows": rows,
        "iterations": iterations,
        "fit_s": {f"{t} BLAS threads": med[t] for t in counts},
        "speedup": {f"{t} BLAS threads over 1": med[1] / med[t] for t in counts if t != 1},
    }


def print_linear(r: dict) -> None:
    print(
        f"linear fit ({r['rows']} rows x {DENSE} dense + {SPARSE} sparse columns, {CLASSES} classes, "
        f"{r['iterations']} L-BFGS iterations; median of alternating rounds):"
    )
    one = r["fit_s"]["1 BLAS threads"]
    for label, s in r["fit_s"].items():
        print(f"  {label:<16}: {s:6.2f} s   {one / s:5.2f}x one thread")
