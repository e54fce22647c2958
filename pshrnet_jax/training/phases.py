"""The two training phases (SPEC 3) as records: what differs, said once.

Phase 1 trains the HR teacher with L_ID; phase 2 the student with L_TOTAL
on HR/LR pairs against the frozen teacher. The driver picks the phases a run
trains (`to_train`) and passes the records down; nothing compares names.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import ml_collections

from pshrnet_jax import workdir_layout
from pshrnet_jax.models import factory
from pshrnet_jax.training import steps


@dataclasses.dataclass(frozen=True)
class Phase:
  """One training phase.

  Attributes:
    name: its folder under the workdir, its TensorBoard run, its log prefix
      and its `train.<name>_epochs` override.
    title: how messages name it.
    role: what it trains and exports ('teacher', 'student').
    loss_name: the loss it minimises, for the console.
    build_model: (config.model, num_classes) -> the trained module.
    step: the pure step (`steps.phase1_step` / `steps.phase2_step`).
    uses_teacher: the step can take the frozen teacher (its module and,
      after (state, batch, rng), its variables; see `reads_teacher`);
      batches carry LR images.
    extractor_path: where the ReID extractor sits in the model's variables:
      ImageNet weights (`config.init_from`) are copied there.
    student_init: `config.student_init='teacher'` starts it from the
      phase-1 teacher instead of ImageNet weights.
  """
  name: str
  title: str
  role: str
  loss_name: str
  build_model: Callable[[Any, int], Any]
  step: Callable[..., Any]
  uses_teacher: bool
  extractor_path: tuple[str, ...]
  student_init: bool

  def epochs(self, config: ml_collections.ConfigDict) -> int:
    """`train.<name>_epochs` if set, else `optim.epochs`."""
    override = config.train.get(f"{self.name}_epochs")
    return int(override if override is not None else config.optim.epochs)

  def epochs_flag(self, config: ml_collections.ConfigDict) -> str:
    """The flag `epochs` reads, for messages."""
    name = f"train.{self.name}_epochs"
    return name if config.train.get(f"{self.name}_epochs") is not None else (
        "optim.epochs")

  def from_teacher(self, config: ml_collections.ConfigDict) -> bool:
    """Whether its first weights are the phase-1 teacher's."""
    return self.student_init and config.student_init == "teacher"

  def steps_with_teacher(self, config: ml_collections.ConfigDict) -> bool:
    """Whether its step runs the frozen teacher (for L_PS)."""
    return self.uses_teacher and config.loss.ps_weight != 0

  def reads_teacher(self, config: ml_collections.ConfigDict) -> bool:
    """Whether it needs the phase-1 teacher: for L_PS, or as its first
    weights. Phase 2 without either (Table IV's joint SR + ID; Tables II
    and III's rows without L_PS on a benchmark config) has no teacher."""
    return self.steps_with_teacher(config) or self.from_teacher(config)

  def checkpoint_dir(self, workdir: str) -> str:
    return workdir_layout.checkpoint_dir(workdir, self.name)

  def export_dir(self, workdir: str) -> str:
    return workdir_layout.export_dir(workdir, self.name, self.role)


TEACHER = Phase(
    name=workdir_layout.TEACHER_PHASE, title="phase 1",
    role=workdir_layout.TEACHER,
    loss_name="L_ID", build_model=factory.build_teacher,
    step=steps.phase1_step, uses_teacher=False, extractor_path=(),
    student_init=False)
STUDENT = Phase(
    name=workdir_layout.STUDENT_PHASE, title="phase 2",
    role=workdir_layout.STUDENT,
    loss_name="L_TOTAL", build_model=factory.build_student,
    step=steps.phase2_step, uses_teacher=True, extractor_path=("reid",),
    student_init=True)
PHASES = (TEACHER, STUDENT)


def to_train(config: ml_collections.ConfigDict) -> tuple[Phase, ...]:
  """The phases `config.mode` trains, in order (HR-only runs: no student)."""
  return tuple(p for p in PHASES if config.mode in (p.name, "all")
               and not (p.uses_teacher and config.hr_only))
