"""PixelCNN: model.py (the gated masked-convolution network and its exact log-likelihood), algo.py
(training, evaluation and sampling)."""
