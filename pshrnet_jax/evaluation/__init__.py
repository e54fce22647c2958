"""Evaluation: rank metrics, test-time features, SR quality, reports.

    from pshrnet_jax.evaluation import evaluate_rank, evaluate
    from pshrnet_jax.evaluation import re_ranking, re_ranking_features

| module | what it holds |
|---|---|
| `torchreid_compat` | `evaluate_rank`, torchreid's evaluator with identical numbers |
| `metrics` | `evaluate` / `evaluate_features`: protocols, AP conventions, mINP, per-factor |
| `rank_engine` | the chunked per-query engine both of them run on |
| `rerank` | k-reciprocal re-ranking: `re_ranking` (torchreid's signature), `re_ranking_features`, rows on demand |
| `rerank_neighbours` | the distances re-ranking reads: jitted nearest-neighbour lists per block of rows |
| `features` | flip-summed L2-normalised features, your own photos, `rank_gallery` |
| `sr_quality` | PSNR / SSIM of SR outputs (paper Table III) |
| `reports` | results.json / results.md |
| `plots` | CMC curves and ranked-list pictures (matplotlib, PIL) |
| `workdir_eval` | evaluating a trained workdir on its benchmark |

Importing this package loads the numpy-only metric modules and the
re-ranking (numpy and jax, nothing compiled at import); the others are
imported where used.
"""

from pshrnet_jax.evaluation.metrics import AP_CONVENTIONS
from pshrnet_jax.evaluation.metrics import PROTOCOLS
from pshrnet_jax.evaluation.metrics import RankResult
from pshrnet_jax.evaluation.metrics import TrialStats
from pshrnet_jax.evaluation.metrics import evaluate
from pshrnet_jax.evaluation.metrics import evaluate_features
from pshrnet_jax.errors import RankInputError
from pshrnet_jax.evaluation.rerank import re_ranking
from pshrnet_jax.evaluation.rerank import re_ranking_features
from pshrnet_jax.evaluation.torchreid_compat import evaluate_rank

__all__ = ["AP_CONVENTIONS", "PROTOCOLS", "RankInputError", "RankResult",
           "TrialStats", "evaluate", "evaluate_features", "evaluate_rank",
           "re_ranking", "re_ranking_features"]
