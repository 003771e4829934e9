"""Deep Q-learning: the algorithm (algo.py) and its replay buffers (replay.py)."""
