r"""Search a gallery for the people in query photos, with a trained model.

    python -m pshrnet_jax.search --model=workdirs/demo \
        --query=me_far.jpg [more.jpg ...] --gallery=DIR_OR_FEATURES \
        [--top_k=10] [--out=DIR [--overwrite]] [--which=student|teacher]

`--gallery` is a folder of images or a features file of the same model
(`python -m pshrnet_jax.extract`). Prints each query's top-k with distance
(1 - cosine; re-ranked with `--rerank`) and, for Market-style file names,
identity and camera; `--out` adds ranked_list.png and search.json (files
already there are refused, before any work, unless --overwrite is given).
"""

import os

from absl import app
from absl import flags

from data_pipelines import atomic
from data_pipelines import cli as cli_lib
from pshrnet_jax import console
from pshrnet_jax import errors
from pshrnet_jax.inference import commands

_MODEL, _WHICH = commands.define_flags()
flags.adopt_module_key_flags(commands)  # --help lists them too.
_QUERY = flags.DEFINE_multi_string(
    "query", None, "Query image(s); more may follow as plain arguments.",
    required=True)
_GALLERY = flags.DEFINE_string("gallery", None, "Folder of images, or a "
                               "features file (.npz).", required=True)
_TOP_K = flags.DEFINE_integer("top_k", 10, "Matches shown per query.",
                               lower_bound=1)
_OUT = flags.DEFINE_string("out", None, "Folder for ranked_list.png and "
                           "search.json.")
_OVERWRITE = flags.DEFINE_boolean(
    "overwrite", False, "Replace ranked_list.png and search.json in --out.")
_BATCH = flags.DEFINE_integer("batch_size", 32, "Images per batch.",
                               lower_bound=1)
_RERANK = flags.DEFINE_boolean(
    "rerank", False, "k-reciprocal re-ranking (Zhong et al. 2017) of the "
    "distances, with the queries and the gallery as its neighbourhood.")
_K1 = flags.DEFINE_integer("rerank_k1", 20, "Re-ranking k1.", lower_bound=1)
_K2 = flags.DEFINE_integer("rerank_k2", 6, "Re-ranking k2.", lower_bound=1)
_LAMBDA = flags.DEFINE_float("rerank_lambda", 0.3, "Re-ranking lambda.",
                             lower_bound=0.0, upper_bound=1.0)


def _gallery_features(model, variables, info):
  from pshrnet_jax.inference import gallery  # pylint: disable=g-import-not-at-top
  if os.path.isfile(_GALLERY.value):
    feats, paths, _ = gallery.load_features(_GALLERY.value, info.fingerprint)
    return feats, paths, []
  embedded = gallery.embed(model, variables, info,
                           gallery.list_images(_GALLERY.value),
                           batch_size=_BATCH.value, title="gallery")
  return embedded.features, embedded.paths, embedded.failed


def _describe(path: str) -> str:
  from pshrnet_jax.inference import gallery  # pylint: disable=g-import-not-at-top
  ident = gallery.identity_of(path)
  return "" if ident is None else f"id {ident[0]} cam {ident[1]}"


def main(argv):
  console.start_command_log("search", flags.FLAGS["verbosity"].present)
  queries_given = list(_QUERY.value) + list(argv[1:])
  try:
    if _OUT.value:
      atomic.refuse_to_clobber(_OUT.value, overwrite=True, folder=True)
      for name in commands.REPORT_FILES:
        atomic.refuse_to_clobber(os.path.join(_OUT.value, name),
                                 overwrite=_OVERWRITE.value)
    # JAX and the model code once the flags and --out have passed: --help,
    # a bad flag and a refused file answer at once.
    from pshrnet_jax.inference import gallery  # pylint: disable=g-import-not-at-top
    from pshrnet_jax.inference import loading  # pylint: disable=g-import-not-at-top
    model, variables, info = loading.load_model(_MODEL.value, _WHICH.value)
    g_feats, g_paths, g_failed = _gallery_features(model, variables, info)
    queries = gallery.embed(model, variables, info,
                            gallery.list_images(queries_given),
                            batch_size=_BATCH.value, keep_sr=True,
                            title="queries")
  except errors.INPUT_ERRORS as e:
    return console.fatal(e)
  skipped = g_failed + queries.failed
  rerank = (dict(k1=_K1.value, k2=_K2.value, lambda_value=_LAMBDA.value)
            if _RERANK.value else None)
  try:
    indices, distances = gallery.search(queries.features, g_feats,
                                        _TOP_K.value, rerank=rerank)
  except errors.INPUT_ERRORS + (ValueError,) as e:
    return console.fatal(e)
  for r, query in enumerate(queries.paths):
    console.say(f"\nquery {query} {_describe(query)}")
    console.say(f"{'rank':>4}  {'distance':>8}  path")
    for k, j in enumerate(indices[r]):
      console.say(f"{k + 1:>4}  {distances[r, k]:8.4f}  {g_paths[j]}  "
                  f"{_describe(g_paths[j])}".rstrip())
  for path, reason in skipped:
    console.say(f"skipped {path}: {reason}")
  if _OUT.value:
    gallery.write_report(_OUT.value, queries, indices, distances, g_paths,
                         skipped, model=_MODEL.value,
                         gallery_source=_GALLERY.value)
    console.say(f"\nWrote {os.path.join(_OUT.value, 'ranked_list.png')} and "
                f"{os.path.join(_OUT.value, 'search.json')}.")
  return 0


def cli():
  """The console script (pyproject.toml)."""
  cli_lib.run(main, __name__)


if __name__ == "__main__":
  cli()
