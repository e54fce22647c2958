"""What the search, extract and export commands share before they import
JAX: the --model and --which flags and the files `search --out` writes.

A leaf (absl only), so that `--help`, a flag error and a refused output
answer at once; the commands import the model code once those have passed.
"""

from absl import flags

WHICH = ("student", "teacher")
# What `python -m pshrnet_jax.search --out=DIR` writes into DIR.
REPORT_FILES = ("ranked_list.png", "search.json")


def define_flags():
  """The --model and --which flags of search, extract and export."""
  return (flags.DEFINE_string("model", None, "Workdir, export or converted "
                              "checkpoint.", required=True),
          flags.DEFINE_enum("which", None, list(WHICH), "student or teacher "
                            "(default: the folder's, or a workdir's student)."))
