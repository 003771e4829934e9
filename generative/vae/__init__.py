"""Variational autoencoders: bound.py (the ELBO's maths), likelihoods.py (p(x|z)), nets.py (encoder /
decoder pairs), model.py (the VAE and its test-set bounds), algo.py (training and evaluation)."""
