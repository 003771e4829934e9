"""Deep Q-learning (algo.py); its replay buffers are rl/replay.py and rl/prioritized.py."""
