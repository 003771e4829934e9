"""Generative models: VAEs (vae/), GANs (gan/), DDPM diffusion (diffusion/), data and metrics."""
