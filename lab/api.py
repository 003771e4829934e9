"""The lab from Python: train, load, predict, evaluate, sample: the same machinery as the `lab` command.

    import lab
    run = lab.train("dqn", env_id="CartPole-v1", total_steps=50_000, seed=0)   # a run folder, as `lab train`
    agent = lab.load(run.path)                    # the Q-network only: no replay buffer, optimizer or envs
    action, _ = agent.predict(obs, deterministic=True)                       # SB3's signature
    agent.evaluate(episodes=20)                   # the same numbers as `lab eval RUN --episodes 20`

    pipe = lab.load("runs/ddpm-digits-...")      # a generative run gives a pipeline
    images = pipe(n=16, seed=0, sampler="ddim", steps=50)                    # (16, C, H, W) in [0, 1]
    pipe.save_grid("digits.png", n=64, seed=0)
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lab import registry, session
from lab.config import from_dict, to_dict
from lab.errors import LabError
from lab.presets import base_config
from lab.media import Arrays, Image, image_grid
from lab.rundir import RunDir
from lab.runtime import RunOptions
from lab.sweeps import sweep  # noqa: F401  (lab.sweep: `lab sweep` from Python)

_RUN_FIELDS = {f.name for f in dataclasses.fields(RunOptions)}


@dataclass(frozen=True)
class Run:
    """A run folder: where it is, what it trained, and how it ended."""
    path: Path
    algo: str
    status: str
    """finished, stopped, failed, dead or running (see `lab list runs`)."""
    exit_code: int

    def load(self, device: str | None = None, checkpoint: str = "best") -> Agent | Pipeline:
        return load(self.path, device=device, checkpoint=checkpoint)


def _split_fields(module, fields: dict[str, Any]) -> tuple[dict, dict]:
    config_fields = {f.name for f in dataclasses.fields(module.Config)}
    unknown = set(fields) - config_fields - _RUN_FIELDS
    if unknown:
        raise LabError(f"unknown field {sorted(unknown)[0]!r}; {module.Config.__name__} has "
                       f"{', '.join(sorted(config_fields))}; run options are {', '.join(sorted(_RUN_FIELDS))}.")
    return ({k: v for k, v in fields.items() if k in config_fields},
            {k: v for k, v in fields.items() if k in _RUN_FIELDS})


def train(algo: str, config: Any = None, *, preset: str | None = None, config_file: str | Path | None = None,
          **fields: Any) -> Run:
    """Train ``algo`` into a new run folder, exactly as `lab train ALGO --field value ...` does.

    ``fields`` are the algorithm's config fields (``lr=3e-4``) and run options (``seed=1``,
    ``run_dir="runs/x"``, ``device="cpu"``), applied over ``preset`` and ``config_file`` as flags are;
    ``config`` may be a ready ``Config`` object instead.
    """
    _, module = registry.get(algo)
    config_fields, run_fields = _split_fields(module, fields)
    base, options = base_config(algo, module, preset, None if config_file is None else Path(config_file))
    config = from_dict(module.Config, {**to_dict(config if config is not None else base), **config_fields})
    options = from_dict(RunOptions, {**to_dict(options), **run_fields})
    status, path = session.train(algo, config, options)
    return _run(path, status)


def resume(run_dir: str | Path, total_steps: int | None = None, device: str | None = None) -> Run:
    """Continue a run exactly where it stopped, as `lab resume`."""
    status = session.resume(Path(run_dir), total_steps, device)
    return _run(Path(run_dir), status)


def _run(path: Path, exit_code: int) -> Run:
    run = RunDir(path)
    return Run(path=path, algo=run.read_config()["algo"], status=run.status().get("state", "?"), exit_code=exit_code)


def load(run_dir_or_checkpoint: str | Path, device: str | None = None, checkpoint: str = "best") -> Agent | Pipeline:
    """A trained model, built lean (networks only, in eval mode): an ``Agent`` for RL runs, a
    ``Pipeline`` for generative ones. Takes a run folder or a checkpoint file inside one."""
    path = Path(run_dir_or_checkpoint)
    if path.is_file() and path.parent.name == "checkpoints":
        path, checkpoint = path.parent.parent, str(path)
    run, saved, module, runtime, algorithm, step = session._restore(path, checkpoint, device)
    cls = Agent if hasattr(algorithm, "predict") else Pipeline if hasattr(algorithm, "sample") else None
    if cls is None:
        raise LabError(f"{saved['algo']} runs are neither agents nor generative models; nothing to load.")
    return cls(saved["algo"], module, algorithm, runtime, run.path, step)


class _Loaded:
    def __init__(self, algo: str, module, algorithm, runtime, path: Path, step: int):
        self.algo, self.module, self.algorithm, self.runtime = algo, module, algorithm, runtime
        self.path, self.step = path, step
        self.config = algorithm.config

    @property
    def device(self) -> torch.device:
        return self.runtime.device

    def _options(self, kind: str, values: dict[str, Any]):
        cls = getattr(self.module, kind, None)
        known = {f.name for f in dataclasses.fields(cls)} if cls is not None else set()
        unknown = set(values) - known
        if unknown:
            raise LabError(f"{self.algo} takes no option {sorted(unknown)[0]!r}; its options are "
                           f"{', '.join(sorted(known)) or 'none'}.")
        return cls(**values) if cls is not None else None

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.algo!r}, {str(self.path)!r}, step={self.step})"


class Agent(_Loaded):
    """A trained RL agent. ``predict`` follows Stable-Baselines3's signature, so code written for SB3
    (its ``evaluate_policy``, RL Zoo scripts) can drive it."""

    @property
    def observation_space(self):
        return getattr(self.algorithm, "observation_space", None) or self.network.observation_space

    @property
    def action_space(self):
        return getattr(self.algorithm, "action_space", None) or self.network.action_space

    @property
    def network(self) -> torch.nn.Module:
        """The acting network as a plain ``nn.Module`` (the Q-network of DQN, the policy otherwise)."""
        for name in ("q", "net", "actor"):
            if hasattr(self.algorithm, name):
                return getattr(self.algorithm, name)
        raise AttributeError("no acting network")

    @property
    def policy(self) -> torch.nn.Module:
        return self.network

    @property
    def q_network(self) -> torch.nn.Module:
        if not hasattr(self.algorithm, "q"):
            raise LabError(f"{self.algo} agents have a policy, not a Q-network.")
        return self.algorithm.q

    def predict(self, observation, state=None, episode_start=None, deterministic: bool = True):
        """(action, state) for one observation or a batch; ``state`` is returned unchanged (no recurrence)."""
        obs = np.asarray(observation)
        shape = tuple(self.observation_space.shape)
        if obs.shape == shape:
            return self.algorithm.predict(obs[None], deterministic)[0], state
        if obs.shape[1:] == shape:
            return self.algorithm.predict(obs, deterministic), state
        batch = ", ".join(map(str, shape))
        raise LabError(f"observation of shape {obs.shape}; this agent takes {shape} or a batch (N, {batch}).")

    def evaluate(self, episodes: int = 10, video: bool = False, **options: Any) -> dict[str, Any]:
        """Play ``episodes`` evaluation episodes: the numbers `lab eval` prints for the same options
        (``deterministic``, DQN's ``epsilon``); nothing is written to the run folder. With ``video``
        the result holds a ``lab.Video`` under ``videos/episode``."""
        eval_options = self._options("EvalOptions", {"episodes": episodes, "video": video, **options})
        with self.runtime.isolated_rng():
            return self.algorithm.evaluate(eval_options, during_training=False)


class Pipeline(_Loaded):
    """A trained generative model: ``pipe(n, seed, **options)`` returns samples, images (N, C, H, W) in
    [0, 1] or 2-D points (N, 2); the options are the model's `lab sample` options (DDPM ``sampler``,
    ``steps``, ``eta``, ``guidance``, ``label``; GAN ``truncation``, ``label``)."""

    def __call__(self, n: int = 16, seed: int = 0, **options: Any) -> torch.Tensor:
        sample_options = self._options("SampleOptions", {"n": n, "seed": seed, **options})
        with self.runtime.isolated_rng():
            results = self.algorithm.sample(sample_options)
        arrays = next(v.arrays for v in results.values() if isinstance(v, Arrays))
        return next(v for k, v in arrays.items() if k in ("samples", "images"))

    def save_grid(self, path: str | Path, n: int = 64, seed: int = 0, images: torch.Tensor | None = None,
                  **options: Any) -> Path:
        """Write a PNG grid of ``images`` (default: ``n`` fresh samples) and return its path."""
        images = self(n, seed, **options) if images is None else images
        if images.ndim != 4:
            raise LabError("save_grid takes images (N, C, H, W); 2-D toy samples are points, not images.")
        path = Path(path)
        return Image(image_grid(images)).save(path.with_suffix(""))

    # ---------------------------------------------------------------- VAE
    def _vae(self):
        model = getattr(self.algorithm, "model", None)
        if self.algo != "vae" or model is None:
            raise LabError(f"encode / decode / reconstruct belong to VAE pipelines, not {self.algo}.")
        return model

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The approximate posterior q(z|x): (mean, log-variance) for images in [0, 1]."""
        return self._vae().encoder(x.to(self.device))

    @torch.no_grad()
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """The mean of p(x|z) for latents z: images in [0, 1]."""
        return self._vae().decode_mean(z.to(self.device))

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """decode(mean of q(z|x)): the reconstruction of images in [0, 1]."""
        mean, _ = self.encode(x)
        return self.decode(mean)
