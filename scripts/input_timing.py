"""How fast the P x K training pipeline delivers batches, for the benchmark
scripts (`scripts/benchmark_data.py`, `scripts/accelerator_check.py`)."""

import time

from data_pipelines import pipeline


def time_train_iterator(records, *, workers: int, steps: int, warmup: int = 5,
                        **options) -> tuple[float, float]:
  """(seconds to build the iterator, pairs/s over `steps` batches).

  `options` go to `pipeline.make_train_iterator` (image_size, p, k,
  with_lr, cache_dir, ...). The first `warmup` batches (worker start-up,
  the first epoch's plan) are not timed.
  """
  start = time.perf_counter()
  iterator = pipeline.make_train_iterator(records, worker_count=workers,
                                          **options)
  build = time.perf_counter() - start
  try:
    for _ in range(warmup):
      next(iterator)
    start = time.perf_counter()
    pairs = 0
    for _ in range(steps):
      pairs += len(next(iterator)["hr"])
    return build, pairs / (time.perf_counter() - start)
  finally:
    iterator.close()
