"""Batches made ahead of the training step, in worker processes.

The trainer asks for `batch_at(step, micro)`, a pure function of its arguments; a Prefetcher answers the
same calls with the same tensors, but computes the next ones in `workers` forked processes while the
step runs. Because every batch is a function of its position alone, a resumed run, a run with any number
of workers and one with none see bit-identical data. Warnings a worker raises (an unreadable file it
replaced) come back with its batch and are shown once, by the main process.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time
from collections import deque
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from diffkit import console
from diffkit.errors import DiffkitError

AHEAD = 2  # batches in flight per worker: one being made, one waiting


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def default_workers(device_type: str, processes: int = 1) -> int:
    """Data workers per training process. On an accelerator the host's cores have nothing else to do:
    up to 8 per process, one core kept for the process itself. On CPU the step itself uses every core,
    and a worker only pays where decoding is a large share of the step: one per 4 cores."""
    cores = max(1, available_cores() // processes)
    return min(8, cores - 1) if device_type != "cpu" else cores // 4


_function = None  # the worker's copy of the pool's function (inherited through fork, never pickled)


def _start_worker(function, parent: int) -> None:
    global _function
    import torch

    _function = function
    torch.set_num_threads(1)  # the workers together must not oversubscribe the cores the step uses
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle, at a step boundary
    threading.Thread(target=_exit_with, args=(parent,), daemon=True).start()


def _exit_with(parent: int) -> None:
    """A forked worker holds both ends of its task queue, so it would wait forever for a parent killed
    with SIGKILL: leave as soon as the parent is gone."""
    while os.getppid() == parent:
        time.sleep(0.5)
    os._exit(0)


def _call(*args):
    with console.captured() as messages:
        result = _function(*args)
    return result, messages


def worker_pool(function, workers: int) -> ProcessPoolExecutor:
    """`workers` forked processes that run `function` (any callable: a closure is inherited, not
    pickled); submit `_call` with its arguments, and pass the future to `result`."""
    return ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork"),
                               initializer=_start_worker, initargs=(function, os.getpid()))


def result(future: Future):
    """A worker's result, its warnings shown here (once each)."""
    try:
        value, messages = future.result()
    except BrokenProcessPool:
        raise DiffkitError("a worker process died (out of memory?); --workers 0 works in the main process") from None
    for message in messages:
        console.warn(message)
    return value


def ordered_map(function, items, workers: int):
    """function(item) for each item, in order, computed AHEAD per worker in `workers` processes (or
    here, with none)."""
    if not workers:
        yield from map(function, items)
        return
    pool, pending = worker_pool(function, workers), deque()
    try:
        for item in items:
            pending.append(pool.submit(_call, item))
            if len(pending) >= workers * AHEAD:
                yield result(pending.popleft())
        while pending:
            yield result(pending.popleft())
    finally:
        for future in pending:
            future.cancel()
        pool.shutdown(wait=True, cancel_futures=True)


class Prefetcher:
    """`batch_at` with batches computed ahead in worker processes, in the order the trainer asks for
    them: micro-batches 0..accumulate-1 of each step, steps in order. A call out of that order (the first
    one, after a resume) restarts the queue at the position asked for."""

    def __init__(self, batch_at, workers: int, accumulate: int):
        if workers < 1:
            raise ValueError("a Prefetcher needs at least one worker; call batch_at itself with none")
        self.accumulate, self.depth = accumulate, workers * AHEAD
        self.pool = worker_pool(batch_at, workers)
        self.pending: deque[tuple[int, Future]] = deque()

    def __call__(self, step: int, micro: int):
        position = step * self.accumulate + micro
        if not self.pending or self.pending[0][0] != position:
            self._cancel()
        self._fill(position)
        _, future = self.pending.popleft()
        self._fill(position + 1)
        return result(future)

    def _fill(self, position: int) -> None:
        next_position = self.pending[-1][0] + 1 if self.pending else position
        while len(self.pending) < self.depth:
            step, micro = divmod(next_position, self.accumulate)
            self.pending.append((next_position, self.pool.submit(_call, step, micro)))
            next_position += 1

    def _cancel(self) -> None:
        while self.pending:
            self.pending.popleft()[1].cancel()

    def close(self) -> None:
        self._cancel()
        self.pool.shutdown(wait=True, cancel_futures=True)
