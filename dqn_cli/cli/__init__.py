"""Entry points: the only modules that touch Hydra, OmegaConf and the terminal."""
