"""Reinforcement learning: tabular MDP solvers (mdp/), DQN (dqn/), policy gradients (pg/)."""
