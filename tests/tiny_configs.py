"""The smallest config of every registered algorithm that still exercises all of its code: shared by the
registry-wide protocol test and the device tests."""

TINY = {
    "toy": dict(dim=4, batch_size=8),
    "dqn": dict(env_id="CartPole-v1", buffer_size=64, learning_starts=8, batch_size=8, train_freq=1,
                gradient_steps=1, hidden=(8,), eval_episodes=1, save_buffer=True),
    "reinforce": dict(env_id="CartPole-v1", num_envs=2, rollout_steps=8, hidden=(8,)),
    "actor-critic": dict(env_id="CartPole-v1", num_envs=2, n_steps=4, hidden=(8,)),
    "a2c": dict(env_id="CartPole-v1", num_envs=2, n_steps=4, hidden=(8,)),
    "ppo": dict(env_id="Pendulum-v1", num_envs=2, n_steps=8, minibatch_size=8, n_epochs=1, hidden=(8,)),
    "sac": dict(env_id="Pendulum-v1", buffer_size=64, learning_starts=1, batch_size=4, hidden=(8,), eval_episodes=1,
                save_buffer=True),
    "td3": dict(env_id="Pendulum-v1", buffer_size=64, learning_starts=1, batch_size=4, hidden=(8,), eval_episodes=1,
                save_buffer=True, policy_delay=1),
    "classifier": dict(width=8, batch_size=16),
    "vae": dict(latent_dim=2, conv_channels=8, batch_size=16),
    "gan": dict(data="ring8", hidden=16, depth=1, batch_size=16, eval_samples=16),
    "ddpm": dict(data="ring8", mlp_width=16, mlp_depth=1, batch_size=16, eval_samples=16, diffusion_steps=40),
    "pixelcnn": dict(channels=8, layers=2, batch_size=16),
}
