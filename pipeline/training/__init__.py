"""StyleGAN3 training: configuration, loss phases, the per-step algorithm, the per-worker loop, checkpoints, launch.

Plain-process parts (no Ray needed): `config`, `loss`, `ema`, `ada`, `trainer.Trainer` (one training step),
`checkpoint`. Ray parts: `loop.train_loop_per_worker` (what each Ray Train worker runs) and `launch.prepare` /
`launch.build_trainer` / `launch.fit` (the driver side). docs/algorithm.md "Training".
"""
