"""The variance story of the policy gradient, measured: `lab bench pg-variance`.

For one fixed policy on CartPole, the gradient of J is estimated many times from independent batches of
whole episodes, with each weighting Psi_t of grad log pi(a_t|s_t):

    R(tau)                  the whole-episode return (the log-derivative trick as derived)
    reward-to-go            G_t
    reward-to-go - V(s_t)   G_t minus a state-value baseline fitted to Monte-Carlo returns
    advantage               r_t + gamma V(s_{t+1}) - V(s_t), the TD estimate of Q - V (GAE with lambda)

and for each we report the variance (trace of the covariance of the batch estimates) and the cosine
similarity to a large-sample reference gradient (reward-to-go minus baseline over many more episodes).
The first three have the same mean; the advantage trades a bias (V is only fitted) for less variance.
Undiscounted (gamma = 1) by default, so that R(tau) and the reward-to-go estimate the same gradient.

The fixed policy is trained by the lab's trainer (``lab.session.train_in_memory``); everything after
that only plays episodes and takes gradients of a frozen policy, with no optimizer step (the baseline V
is a regression fitted on Monte-Carlo returns, not a training run of an algorithm).
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from envs.make import make_vector_env
from lab.benchmark import ResultsPath, parse, results_path
from lab.runtime import RunOptions, Runtime, derive_seed
from rl.nets import mlp
from lab.session import train_in_memory
from rl.pg import a2c
from rl.pg.common import EvalOptions, to_env, to_tensor
from rl.pg.losses import policy_gradient_loss
from rl.pg.policies import ActorCritic
from rl.pg.returns import discounted_returns, episode_returns, gae

ESTIMATORS = ("R(tau)", "reward-to-go", "reward-to-go - baseline", "advantage")


def fixed_policy(env_id: str, train_steps: int, seed: int) -> ActorCritic:
    """The policy whose gradient is estimated: A2C trained for ``train_steps`` by the trainer (evaluated
    once, one episode, at the end; not used) or, with 0, the initial policy."""
    options = RunOptions(seed=seed, device="cpu", eval_every=max(train_steps, 1))
    if train_steps > 0:
        trainer = train_in_memory("a2c", a2c.Config(env_id=env_id, total_steps=train_steps), options,
                                  eval_options=EvalOptions(episodes=1))
        return trainer.algorithm.net.eval()
    runtime = Runtime(options)
    algorithm = a2c.Algorithm(a2c.Config(env_id=env_id, total_steps=1), runtime)
    algorithm.close()
    runtime.close()
    return algorithm.net.eval()


@torch.no_grad()
def play_episodes(net: ActorCritic, env_id: str, episodes: int, seed: int, num_envs: int = 16) -> list[dict]:
    """Whole episodes of ``net`` (each env plays a fixed quota, so long episodes are not under-sampled)."""
    num_envs = min(num_envs, episodes)
    quota = np.full(num_envs, episodes // num_envs)
    quota[: episodes % num_envs] += 1
    envs = make_vector_env(env_id, num_envs)
    space = envs.single_action_space
    running = [{"obs": [], "actions": [], "rewards": [], "next_obs": []} for _ in range(num_envs)]
    finished: list[list[dict]] = [[] for _ in range(num_envs)]
    obs, _ = envs.reset(seed=seed)
    while any(len(f) < q for f, q in zip(finished, quota)):
        action = net.act(to_tensor(obs, "cpu"))
        next_obs, reward, terminated, truncated, infos = envs.step(to_env(action, space))
        for i in range(num_envs):
            ep = running[i]
            ep["obs"].append(obs[i])
            ep["actions"].append(action[i])
            ep["rewards"].append(float(reward[i]))
            ended = terminated[i] or truncated[i]
            ep["next_obs"].append(infos["final_obs"][i] if ended else next_obs[i])
            if ended:
                if len(finished[i]) < quota[i]:
                    finished[i].append({"obs": torch.as_tensor(np.stack(ep["obs"]), dtype=torch.float32),
                                        "actions": torch.stack(ep["actions"]),
                                        "r_t": torch.tensor(ep["rewards"]),
                                        "next_obs": torch.as_tensor(np.stack(ep["next_obs"]), dtype=torch.float32),
                                        "terminated": bool(terminated[i])})
                running[i] = {"obs": [], "actions": [], "rewards": [], "next_obs": []}
        obs = next_obs
    envs.close()
    return [ep for per_env in finished for ep in per_env]


def concatenate(episodes: list[dict]) -> dict:
    """Flat tensors of a list of episodes, with done_t / terminated_t marking each episode's last step."""
    lengths = [len(ep["r_t"]) for ep in episodes]
    done = torch.zeros(sum(lengths))
    done[torch.tensor(lengths).cumsum(0) - 1] = 1.0
    terminated = done.clone()
    terminated[torch.tensor(lengths).cumsum(0) - 1] = torch.tensor([float(ep["terminated"]) for ep in episodes])
    return {"obs": torch.cat([ep["obs"] for ep in episodes]), "actions": torch.cat([ep["actions"] for ep in episodes]),
            "r_t": torch.cat([ep["r_t"] for ep in episodes]),
            "next_obs": torch.cat([ep["next_obs"] for ep in episodes]), "done_t": done, "terminated_t": terminated}


def fit_baseline(batch: dict, gamma: float, seed: int, steps: int = 500) -> torch.nn.Module:
    """V(s) regressed on Monte-Carlo reward-to-go (full-batch Adam). A least-squares fit of a measuring
    tool on a fixed batch, not the training of an algorithm: no trainer (nothing to evaluate or log)."""
    torch.manual_seed(seed)
    value = mlp(batch["obs"].shape[1], 1, (64, 64), torch.nn.Tanh)
    target = discounted_returns(batch["r_t"], batch["done_t"], gamma)
    optimizer = torch.optim.Adam(value.parameters(), lr=3e-3)
    for _ in range(steps):
        loss = torch.nn.functional.mse_loss(value(batch["obs"]).squeeze(-1), target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return value.eval()


def weightings(batch: dict, value: torch.nn.Module, gamma: float, lam: float) -> dict[str, torch.Tensor]:
    """Psi_t of each estimator on one batch of whole episodes."""
    with torch.no_grad():
        v_t, v_tp1 = value(batch["obs"]).squeeze(-1), value(batch["next_obs"]).squeeze(-1)
    g_t = discounted_returns(batch["r_t"], batch["done_t"], gamma)
    return {"R(tau)": episode_returns(batch["r_t"], batch["done_t"], gamma),
            "reward-to-go": g_t,
            "reward-to-go - baseline": g_t - v_t,
            "advantage": gae(batch["r_t"], v_t, v_tp1, batch["terminated_t"], batch["done_t"], gamma, lam)}


def gradients(net: ActorCritic, batch: dict, psis: dict[str, torch.Tensor], names) -> dict[str, torch.Tensor]:
    """The policy-gradient estimate (flattened over all policy parameters) for each named weighting."""
    params = [*net.policy_trunk.parameters(), *net.head.parameters()]
    log_prob = net.policy(batch["obs"]).log_prob(batch["actions"])
    out = {}
    for name in names:
        grads = torch.autograd.grad(-policy_gradient_loss(log_prob, psis[name]), params, retain_graph=True)
        out[name] = torch.cat([g.flatten() for g in grads])
    return out


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.nn.functional.cosine_similarity(a, b, dim=-1).mean())


def measure(env_id: str = "CartPole-v1", train_steps: int = 10_000, batches: int = 100,
            episodes_per_batch: int = 10, reference_episodes: int = 2000, baseline_episodes: int = 500,
            gamma: float = 1.0, gae_lambda: float = 0.0, seed: int = 0) -> dict:
    """Variance and cosine-to-reference of each estimator, plus the mean-preservation check of the baseline."""
    net = fixed_policy(env_id, train_steps, seed)
    baseline_batch = concatenate(play_episodes(net, env_id, baseline_episodes, derive_seed(seed, "baseline-episodes")))
    value = fit_baseline(baseline_batch, gamma, seed)
    reference_batch = concatenate(play_episodes(net, env_id, reference_episodes,
                                                derive_seed(seed, "reference-episodes")))
    reference = gradients(net, reference_batch, weightings(reference_batch, value, gamma, gae_lambda),
                          ["reward-to-go - baseline"])["reward-to-go - baseline"]
    episodes = play_episodes(net, env_id, batches * episodes_per_batch, derive_seed(seed, "estimate-episodes"))
    estimates = {name: [] for name in ESTIMATORS}
    # not a training loop: gradient samples of the frozen policy, collected for their variance, never applied
    for k in range(batches):
        batch = concatenate(episodes[k::batches])   # every env contributes to every batch
        for name, g in gradients(net, batch, weightings(batch, value, gamma, gae_lambda), ESTIMATORS).items():
            estimates[name].append(g)
    rows = {}
    for name in ESTIMATORS:
        g = torch.stack(estimates[name])
        rows[name] = {"variance": float(g.var(0).sum()),                       # trace of the covariance
                      "cosine_to_reference": cosine(g, reference[None]),       # mean over single estimates
                      "cosine_of_mean": cosine(g.mean(0), reference)}          # is the mean right?
    base = rows["R(tau)"]["variance"]
    for row in rows.values():
        row["variance_ratio"] = row["variance"] / base
    # a baseline must not move the mean: the batch-wise difference of the two estimators averages to ~0
    diff = torch.stack(estimates["reward-to-go"]) - torch.stack(estimates["reward-to-go - baseline"])
    mean_shift = float(diff.mean(0).pow(2).sum() / (diff.var(0).sum() / batches))
    mean_length = float(np.mean([len(ep["r_t"]) for ep in episodes]))
    return {"env_id": env_id, "train_steps": train_steps, "batches": batches, "episodes_per_batch": episodes_per_batch,
            "reference_episodes": reference_episodes, "gamma": gamma, "gae_lambda": gae_lambda, "seed": seed,
            "mean_episode_length": mean_length, "estimators": rows,
            "baseline_mean_shift_over_its_standard_error_sq": mean_shift}


def bar_chart(result: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(result["estimators"])
    rows = [result["estimators"][n] for n in names]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
    left.bar(names, [r["variance"] for r in rows], color="tab:blue")
    left.set_yscale("log")
    left.set_title("variance (trace of covariance)")
    right.bar(names, [r["cosine_to_reference"] for r in rows], color="tab:green")
    right.set_ylim(0, 1)
    right.set_title("cosine to reference gradient")
    for ax in (left, right):
        ax.tick_params(axis="x", labelrotation=20, labelsize=8)
    fig.suptitle(f"policy-gradient estimators, {result['env_id']}, {result['batches']} batches of "
                 f"{result['episodes_per_batch']} episodes (mean length {result['mean_episode_length']:.0f})")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def table(result: dict) -> str:
    lines = [f"{'estimator':<26}{'variance':>14}{'vs R(tau)':>11}{'cos to ref':>12}{'cos of mean':>13}"]
    for name, row in result["estimators"].items():
        lines.append(f"{name:<26}{row['variance']:>14.4g}{row['variance_ratio']:>11.3f}"
                     f"{row['cosine_to_reference']:>12.3f}{row['cosine_of_mean']:>13.3f}")
    return "\n".join(lines)


@dataclass(frozen=True)
class Options:
    """Variance and direction of the policy-gradient estimators for one fixed policy."""

    env_id: str = "CartPole-v1"
    """Gymnasium env id."""
    train_steps: int = 10_000
    """A2C steps that make the fixed policy (0: the initial policy)."""
    batches: int = 100
    """Independent gradient estimates per estimator."""
    episodes_per_batch: int = 10
    """Whole episodes per gradient estimate."""
    reference_episodes: int = 2000
    """Episodes of the reference gradient."""
    baseline_episodes: int = 500
    """Episodes the baseline V is fitted on."""
    gamma: float = 1.0
    """Discount factor."""
    gae_lambda: float = 0.0
    """lambda of the advantage estimate (0: the TD error)."""
    seed: int = 0
    """Seed of the policy and of the episodes."""
    out: ResultsPath = None


def main(argv: list[str] | None = None) -> int:
    args = parse(Options, argv, "pg-variance")
    torch.set_num_threads(1)
    started = time.perf_counter()
    result = measure(args.env_id, args.train_steps, args.batches, args.episodes_per_batch, args.reference_episodes,
                     args.baseline_episodes, args.gamma, args.gae_lambda, args.seed)
    result["seconds"] = time.perf_counter() - started
    print(table(result))
    print(f"baseline mean shift / its standard error, squared: {result['baseline_mean_shift_over_its_standard_error_sq']:.2f}"
          " (about 1 when the baseline leaves the mean unchanged)")
    out = results_path(args.out, "pg_variance")
    out.write_text(json.dumps(result, indent=2))
    chart = out.with_suffix(".png")
    bar_chart(result, chart)
    print(f"wrote {out} and {chart} ({result['seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
