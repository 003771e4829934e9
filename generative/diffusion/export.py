"""A DDPM run as a Hugging Face diffusers folder: ``DDPMPipeline.from_pretrained(folder)`` draws the same
samples as `lab sample --sampler ddpm` from the same seed (to float tolerance).

The lab's U-Net is diffusers' ``UNet2DModel`` layer for layer (conv_in, sinusoidal time embedding with sin
before cos, residual blocks with a time projection, optional self-attention, strided-conv downsampling,
nearest + conv upsampling, skip connections in the same order), so the export is a renaming of weights
plus the split of the fused q/k/v convolution into diffusers' three projections. The schedule maps to a
``DDPMScheduler`` with the posterior variance β̃ ("fixed_small") and clipping of x̂_0 to [-1, 1].
"""
from __future__ import annotations

import json
from typing import Any

import torch
from torch import nn

from generative.diffusion.unet import Attention, UNet
from lab.errors import LabError


def unet_config(config: Any, in_channels: int, attention_channels: list[int]) -> dict[str, Any]:
    """The ``UNet2DModel`` config of the lab U-Net a (resolved) DDPM config builds."""
    levels = len(config.channel_mults)
    sizes = [config.image_size // 2 ** level for level in range(levels)]
    down = ["AttnDownBlock2D" if size in config.attention_resolutions else "DownBlock2D" for size in sizes]
    up = ["AttnUpBlock2D" if size in config.attention_resolutions else "UpBlock2D" for size in reversed(sizes)]
    # heads: the lab uses max(1, channels // 32); diffusers uses channels // attention_head_dim
    head_dim = None if max(attention_channels) < 64 else 32
    return {"_class_name": "UNet2DModel", "sample_size": config.image_size, "in_channels": in_channels,
            "out_channels": in_channels, "layers_per_block": config.res_blocks,
            "block_out_channels": [config.width * m for m in config.channel_mults],
            "down_block_types": down, "up_block_types": up, "norm_num_groups": 8, "norm_eps": 1e-5,
            "attention_head_dim": head_dim, "flip_sin_to_cos": False, "freq_shift": 0, "act_fn": "silu",
            "time_embedding_type": "positional", "downsample_padding": 1, "mid_block_scale_factor": 1,
            "add_attention": True, "dropout": 0.0}


def scheduler_config(config: Any) -> dict[str, Any]:
    """The ``DDPMScheduler`` config of the run's noise schedule and ancestral sampler (σ_t² = β̃_t)."""
    scale = 1000 / config.diffusion_steps                 # the lab's linear β are rescaled when T != 1000
    prediction = {"eps": "epsilon", "v": "v_prediction", "x0": "sample"}[config.prediction]
    return {"_class_name": "DDPMScheduler", "num_train_timesteps": config.diffusion_steps,
            "beta_schedule": {"linear": "linear", "cosine": "squaredcos_cap_v2"}[config.schedule],
            "beta_start": 1e-4 * scale, "beta_end": 0.02 * scale, "variance_type": "fixed_small",
            "clip_sample": True, "clip_sample_range": 1.0, "prediction_type": prediction}


def _resblock(prefix: str, block: nn.Module) -> dict[str, torch.Tensor]:
    names = {"norm1": "norm1", "conv1": "conv1", "emb": "time_emb_proj", "norm2": "norm2", "conv2": "conv2",
             "skip": "conv_shortcut"}
    return {f"{prefix}.{names[key.split('.')[0]]}.{key.split('.', 1)[1]}": value
            for key, value in block.state_dict().items()}


def _attention(prefix: str, block: Attention) -> dict[str, torch.Tensor]:
    c = block.norm.num_channels
    w, b = block.qkv.weight[:, :, 0, 0], block.qkv.bias
    out = {f"{prefix}.group_norm.weight": block.norm.weight, f"{prefix}.group_norm.bias": block.norm.bias,
           f"{prefix}.to_out.0.weight": block.out.weight[:, :, 0, 0], f"{prefix}.to_out.0.bias": block.out.bias}
    for i, name in enumerate(("to_q", "to_k", "to_v")):      # the fused 1x1 conv holds q, k, v in that order
        out[f"{prefix}.{name}.weight"], out[f"{prefix}.{name}.bias"] = w[i * c:(i + 1) * c], b[i * c:(i + 1) * c]
    return out


def _block(prefix: str, index: int, layers: nn.ModuleList) -> dict[str, torch.Tensor]:
    weights = _resblock(f"{prefix}.resnets.{index}", layers[0])
    if len(layers) > 1:
        weights.update(_attention(f"{prefix}.attentions.{index}", layers[1]))
    return weights


def unet_weights(unet: UNet, levels: int, res_blocks: int) -> dict[str, torch.Tensor]:
    """The lab U-Net's tensors under ``UNet2DModel``'s parameter names."""
    w = {"conv_in.weight": unet.stem.weight, "conv_in.bias": unet.stem.bias,
         "conv_norm_out.weight": unet.head[0].weight, "conv_norm_out.bias": unet.head[0].bias,
         "conv_out.weight": unet.head[2].weight, "conv_out.bias": unet.head[2].bias}
    for i, layer in ((1, unet.conditioning.time[0]), (2, unet.conditioning.time[2])):
        w[f"time_embedding.linear_{i}.weight"], w[f"time_embedding.linear_{i}.bias"] = layer.weight, layer.bias
    down = iter(unet.down)
    for level in range(levels):
        for j in range(res_blocks):
            w.update(_block(f"down_blocks.{level}", j, next(down)))
        if level < levels - 1:
            conv = next(down)
            w[f"down_blocks.{level}.downsamplers.0.conv.weight"] = conv.weight
            w[f"down_blocks.{level}.downsamplers.0.conv.bias"] = conv.bias
    w.update(_resblock("mid_block.resnets.0", unet.middle[0]))
    w.update(_attention("mid_block.attentions.0", unet.middle[1]))
    w.update(_resblock("mid_block.resnets.1", unet.middle[2]))
    up = iter(unet.up)
    for u in range(levels):
        for j in range(res_blocks + 1):
            w.update(_block(f"up_blocks.{u}", j, next(up)))
        if u < levels - 1:
            conv = next(up)[1]
            w[f"up_blocks.{u}.upsamplers.0.conv.weight"] = conv.weight
            w[f"up_blocks.{u}.upsamplers.0.conv.bias"] = conv.bias
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in w.items()}


def check_exportable(algorithm: Any) -> list[int]:
    """The channel counts of the attention blocks; one sentence for a model diffusers cannot express."""
    config = algorithm.config
    if algorithm.is_toy:
        raise LabError("--format diffusers exports image models; this DDPM run is on 2-D points.")
    if config.conditional:
        raise LabError("--format diffusers exports unconditional models (DDPMPipeline passes no labels).")
    if config.prediction == "levels":
        raise LabError("--format diffusers exports eps, v or x0 predictors; this run predicts a softmax over levels.")
    if getattr(config, "learn_variance", False):
        raise LabError("--format diffusers exports fixed-variance models; this run learned its variance.")
    if config.channel_mults[0] != 1:
        raise LabError("--format diffusers needs --channel-mults starting at 1 (diffusers sizes the time "
                       "embedding by the first level's channels).")
    channels = [m.norm.num_channels for m in algorithm.ema.modules() if isinstance(m, Attention)]
    if max(channels) >= 64 and any(c % 32 for c in channels):
        raise LabError(f"--format diffusers needs attention widths that are multiples of 32 (or all below 64); "
                       f"this U-Net has {sorted(set(channels))}.")
    return channels


def diffusers_files(algorithm: Any) -> dict[str, bytes]:
    """The files of a diffusers folder by relative path: ``model_index.json``, ``unet/`` (config + EMA
    weights) and ``scheduler/`` (the caller writes them)."""
    channels = check_exportable(algorithm)
    try:
        from safetensors.torch import save
    except ImportError:
        raise LabError("--format diffusers needs the safetensors package: pip install safetensors.") from None
    config = algorithm.config

    def as_json(value: dict[str, Any]) -> bytes:
        return (json.dumps(value, indent=2) + "\n").encode()
    return {
        "model_index.json": as_json({"_class_name": "DDPMPipeline", "unet": ["diffusers", "UNet2DModel"],
                                     "scheduler": ["diffusers", "DDPMScheduler"]}),
        "unet/config.json": as_json(unet_config(config, algorithm.shape[0], channels)),
        "scheduler/scheduler_config.json": as_json(scheduler_config(config)),
        "unet/diffusion_pytorch_model.safetensors": save(unet_weights(algorithm.ema, len(config.channel_mults),
                                                                      config.res_blocks)),
    }
