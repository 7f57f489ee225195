"""vmmlib: models, losses, data readers, metrics, training loop and ensembling for video multimodal
competition work. The notebooks in `notebooks/` orchestrate these pieces; everything here is usable
on its own."""

__version__ = "0.1.0"
