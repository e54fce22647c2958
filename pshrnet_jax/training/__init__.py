"""Training: two phases, one loop.

| module | what it holds |
|---|---|
| `loop` | one phase from start (or resume) to export; the cached jitted step |
| `steps` | `TrainState` and the pure per-phase steps |
| `losses` | label-smoothed CE, batch-hard triplet, L1 SR, pseudo-siamese L1 |
| `optim` | PyTorch-equal SGD, LR groups from path patterns, step decay |
| `initialization` | a phase's first weights: ImageNet, the teacher, or random |
| `checkpoint` | one Orbax CheckpointManager per phase |
| `sharding` | the "data" mesh and batch placement |
| `metric_writers` | progress lines and TensorBoard scalars |

Nothing here imports `pshrnet_jax.evaluation`.
"""
