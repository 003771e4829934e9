"""Generative adversarial networks: the losses (losses.py), the networks (nets.py) and the training
game with its evaluation and sampling (algo.py, ``lab train gan``)."""
