"""Make the next batches in a background thread while the current one trains.

End-to-end fine-tuning decodes every image of every batch. Made in the training thread, the
decoding and the accelerator take turns: on one H200 with 16 cores, ``fusion_crossattention_lite2_finetune_gpu`` on the
demo left the GPU idle most of the time (nvidia-smi). A batch made ahead overlaps the two, as a DataLoader's workers
would, without moving the decoding (already spread over ``finetune_options.loader_threads``) into
other processes.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from itertools import islice
from typing import TypeVar

T = TypeVar("T")


def prefetched(make: Callable[..., T], args: Iterable[tuple], ahead: int) -> Iterator[T]:
    """``make(*a)`` for each ``a`` of ``args``, in order, with up to ``ahead`` calls running early.

    ``ahead`` 0 calls ``make`` in the caller's thread, one batch at a time. The batches are the
    same either way (``make`` must not draw random numbers: the loop draws the order and the flips
    before it asks). Leaving the loop early waits for the calls already started.
    """
    if ahead <= 0:
        for a in args:
            yield make(*a)
        return
    rest = iter(args)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="prefetch") as pool:
        pending = deque(pool.submit(make, *a) for a in islice(rest, ahead))
        while pending:
            batch = pending.popleft().result()
            nxt = next(rest, None)
            if nxt is not None:
                pending.append(pool.submit(make, *nxt))
            yield batch
