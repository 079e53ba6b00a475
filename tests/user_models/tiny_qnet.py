"""A user's own Q-network, as a user would write it: tests put this folder on PYTHONPATH and
train it with model=custom model._target_=tiny_qnet.TinyQNet."""

from torch import nn


class TinyQNet(nn.Module):
    def __init__(self, obs_shape, obs_dtype, n_actions, width=16):
        super().__init__()
        self.body = nn.Sequential(
            nn.Flatten(), nn.Linear(obs_shape[0], width), nn.Tanh(), nn.Linear(width, n_actions)
        )

    def forward(self, obs):
        return self.body(obs)
