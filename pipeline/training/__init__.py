"""StyleGAN3 training: configuration, loss phases, the per-worker loop, checkpoints, the Ray trainer.

Plain-process parts (no Ray needed): `config`, `loss`, `ema`, `loop.Trainer` (one training step),
`checkpoint`. Ray parts: `loop.train_loop_per_worker` (what each Ray Train worker runs) and
`trainer.build_trainer` / `trainer.fit` (the driver side). docs/algorithm.md "Training".
"""
