"""Input pipelines: the P x K sampler, paired augmentation, the decode-once
image cache, and the grain training iterator and evaluation batches."""

from data_pipelines.pipeline.eval_batches import EvalBatches
from data_pipelines.pipeline.eval_batches import make_eval_batches
from data_pipelines.pipeline.train_iterator import TrainIterator
from data_pipelines.pipeline.train_iterator import make_train_iterator

__all__ = ["EvalBatches", "TrainIterator", "make_eval_batches",
           "make_train_iterator"]
