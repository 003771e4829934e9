"""The one explicit table of algorithms. Adding an algorithm is one line here.

Each entry names a module that defines:

    Config          a frozen dataclass of hyperparameters, documented field by field, with a
                    ``total_steps`` field (what a step counts is the algorithm's to say)
    Algorithm       ``Algorithm(config, runtime)`` following ``lab.protocol.Algorithm``
    EvalOptions     optional dataclass of ``lab eval`` flags (passed to ``evaluate``)
    SampleOptions   optional dataclass of ``lab sample`` flags (passed to ``sample``)

Modules are imported only when their algorithm is used, so ``lab --help`` stays fast.
"""
from __future__ import annotations

import difflib
import importlib
from dataclasses import dataclass
from types import ModuleType

from lab.errors import LabError


@dataclass(frozen=True)
class AlgoSpec:
    module: str
    summary: str

    def load(self) -> ModuleType:
        return importlib.import_module(self.module)


ALGORITHMS: dict[str, AlgoSpec] = {
    "toy": AlgoSpec("lab.toy", "linear regression by minibatch SGD: a tiny model to try the trainer on"),
    "dqn": AlgoSpec("rl.dqn.algo", "deep Q-learning: replay buffer + target network, CartPole to Atari"),
    "reinforce": AlgoSpec("rl.pg.reinforce", "REINFORCE: Monte-Carlo policy gradient from whole episodes"),
    "actor-critic": AlgoSpec("rl.pg.actor_critic", "actor-critic: policy gradient weighted by a TD-learned Q"),
    "a2c": AlgoSpec("rl.pg.a2c", "advantage actor-critic over N vector envs, n-step or GAE(lambda)"),
    "ppo": AlgoSpec("rl.pg.ppo", "proximal policy optimization: clipped surrogate, GAE, minibatch epochs"),
    "sac": AlgoSpec("rl.sac", "soft actor-critic: off-policy, squashed Gaussian, twin critics, learned temperature"),
    "td3": AlgoSpec("rl.td3", "twin delayed DDPG: off-policy, deterministic actor, twin critics, target smoothing"),
    "classifier": AlgoSpec("generative.metrics.classifier", "small conv classifier whose features score samples (FID, IS)"),
    "vae": AlgoSpec("generative.vae.algo", "variational autoencoder trained on the ELBO"),
    "gan": AlgoSpec("generative.gan.algo", "GANs: minimax, non-saturating, WGAN-GP, hinge; DCGAN, conditional"),
    "ddpm": AlgoSpec("generative.diffusion.algo", "DDPM diffusion: U-Net denoiser, ancestral and DDIM sampling"),
    "pixelcnn": AlgoSpec("generative.pixelcnn.algo", "gated PixelCNN: exact likelihood, pixel-by-pixel sampling"),
}


def get(name: str) -> tuple[AlgoSpec, ModuleType]:
    """The spec and imported module of an algorithm, or a clear error naming the close matches."""
    if name not in ALGORITHMS:
        close = difflib.get_close_matches(name, ALGORITHMS, n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise LabError(f"unknown algorithm {name!r}; known: {', '.join(ALGORITHMS)}.{hint}")
    spec = ALGORITHMS[name]
    try:
        return spec, spec.load()
    except ModuleNotFoundError as error:
        if error.name and spec.module.startswith(error.name):
            raise LabError(f"algorithm {name!r} is listed but its module {spec.module} is not installed.") from None
        raise


def describe() -> list[tuple[str, str]]:
    return [(name, spec.summary) for name, spec in ALGORITHMS.items()]
