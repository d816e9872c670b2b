"""The training engine: one recipe per stage over transformers' Trainer, plus the components
they share (methods, collators, the callback, checkpoints, plots). Not the Qianfan-style SDK,
which is `tuneforge.trainer`."""
