"""Where a run keeps what it writes: one function per path of a workdir.

    WORKDIR/
      .pshrnet_jax_workdir       the marker: this folder is a workdir
      config.json                resolved config of the last start
      data/                      built data (MLR images, TFDS files, image
                                 caches) unless --config.data.build_dir
      phase1/checkpoints/<step>  Orbax: state, data-iterator state, meta
      phase1/teacher/            the final teacher variables
      phase2/checkpoints/<step>
      phase2/student/            the final student variables
      tensorboard/{phase1,phase2,eval}
      phase*/{teacher,student}/model.json   the model, to rebuild it
      results.json, results.md, cmc.png, ranked_list.png
      log.txt                    everything logged (the console shows less)

Imports nothing from the project.
"""

from __future__ import annotations

import os
from typing import Any

CONFIG_FILE = "config.json"
# Written when a run first writes into a workdir; a run refuses a folder
# that holds files and neither this nor a config.json of this project.
MARKER_FILE = ".pshrnet_jax_workdir"
RESULTS_JSON = "results.json"
RESULTS_MD = "results.md"
CMC_PNG = "cmc.png"
RANKED_LIST_PNG = "ranked_list.png"
# Beside exported variables: what model they belong to (models.factory).
MODEL_FILE = "model.json"
# The two phases' folders and what each exports (training.phases names them).
TEACHER_PHASE, TEACHER = "phase1", "teacher"
STUDENT_PHASE, STUDENT = "phase2", "student"


def data_build_dir(config: Any, workdir: str) -> str:
  """Built data (MLR images, TFDS files, image caches)."""
  return config.data.build_dir or os.path.join(workdir, "data")


def checkpoint_dir(workdir: str, phase: str) -> str:
  """The Orbax CheckpointManager folder of the phase folder `phase`."""
  return os.path.join(workdir, phase, "checkpoints")


def export_dir(workdir: str, phase: str, role: str) -> str:
  """A phase's final variables: WORKDIR/<phase>/<role> (teacher, student)."""
  return os.path.join(workdir, phase, role)


def student_dir(workdir: str) -> str:
  """The student phase 2 exports."""
  return export_dir(workdir, STUDENT_PHASE, STUDENT)


def teacher_dir(config: Any, workdir: str) -> str:
  """The phase-1 teacher phase 2 and evaluation use (--config.teacher_dir
  points at another run's)."""
  return config.teacher_dir or export_dir(workdir, TEACHER_PHASE, TEACHER)


def tensorboard_dir(workdir: str, run: str = "") -> str:
  """TensorBoard logs: one run per phase, and 'eval'; '' is their parent."""
  return os.path.join(workdir, "tensorboard", run)
