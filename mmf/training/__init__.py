"""Training: the optimizer, checkpoints and the training loop. Imports models, layers and text.

  adamw        AdamW with decoupled weight decay
  checkpoint   one self-verifying file per checkpoint, written atomically
  trainer      TrainConfig, presets, the schedule, the loop, evaluation and logs
               (its command line is `python -m mmf.train`)
"""
