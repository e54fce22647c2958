"""Evaluation: rank metrics, re-ranking, test-time features, SR quality, reports.

    from pshrnet_jax.evaluation import evaluate_rank, evaluate, re_ranking

Importing this package loads only the numpy metrics and the re-ranking
(nothing compiled at import); WORKSPACE.md maps the modules.
"""

from pshrnet_jax.errors import RankInputError
from pshrnet_jax.evaluation.metrics import (
    AP_CONVENTIONS, PROTOCOLS, RankResult, TrialStats, evaluate,
    evaluate_features, evaluate_rank)
from pshrnet_jax.evaluation.rerank import re_ranking, re_ranking_features

__all__ = ["AP_CONVENTIONS", "PROTOCOLS", "RankInputError", "RankResult",
           "TrialStats", "evaluate", "evaluate_features", "evaluate_rank",
           "re_ranking", "re_ranking_features"]
