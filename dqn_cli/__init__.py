"""dqn-cli: config-driven Deep Q-Network training."""

__version__ = "0.1.0"
