"""fit(): the training loop (`loop`), one optimiser step (`step`), its config, checkpoints, optimiser, launch, adversarial training."""
