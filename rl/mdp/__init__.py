"""Exact solvers for tabular MDPs: value iteration, policy iteration, Q iteration, policy evaluation."""
from rl.mdp.solvers import (SOLVERS, Solution, evaluate_policy, policy_iteration, q_iteration,
                            stopping_threshold, value_iteration)

__all__ = ["SOLVERS", "Solution", "evaluate_policy", "policy_iteration", "q_iteration", "stopping_threshold",
           "value_iteration"]
