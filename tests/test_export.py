"""`lab export`: safetensors weights that reload to the same tensors, a model card, and a DDPM run as a
diffusers folder that draws the same samples (skipped without safetensors / diffusers)."""
from __future__ import annotations

import json

import pytest
import torch

import lab
from lab import checkpoint
from lab.export import export

FAST = dict(device="cpu", seed=0)


def test_safetensors_export_reloads_to_the_checkpoint_networks(tmp_path, lab_cli):
    safetensors = pytest.importorskip("safetensors.torch")
    run = lab.train("a2c", env_id="CartPole-v1", total_steps=160, run_dir=tmp_path / "run", **FAST)
    result = lab_cli("export", run.path, "--checkpoint", "last")
    assert result.returncode == 0, result.stderr
    out = run.path / "export-safetensors"
    weights = safetensors.load_file(str(out / "model.safetensors"))
    saved = checkpoint.load(run.path / "checkpoints" / "last.pt")["algorithm"]["net"]
    assert weights.keys() == {f"net.{k}" for k in saved}
    assert all(torch.equal(weights[f"net.{k}"], v) for k, v in saved.items())
    assert not any("optimizer" in k for k in weights)
    card = (out / "README.md").read_text()
    assert card.startswith("# a2c on CartPole-v1") and "eval/ep_return" in card
    assert json.loads((out / "config.json").read_text())["config"]["env_id"] == "CartPole-v1"


@pytest.fixture
def lab_cli(lab):
    return lab


def test_a_bad_export_request_is_one_sentence(tmp_path, lab_cli):
    run = lab.train("ddpm", data="ring8", total_steps=4, eval_samples=8, run_dir=tmp_path / "toy", **FAST)
    result = lab_cli("export", run.path, "--format", "diffusers")
    assert result.returncode == 2 and "2-D points" in result.stderr and "Traceback" not in result.stderr
    assert not (run.path / "export-diffusers").exists()


def test_export_refuses_formats_flags_and_folders_that_do_not_apply(tmp_path, lab_cli):
    from test_reliability import assert_one_line_error, snapshot
    run = lab.train("toy", total_steps=10, run_dir=tmp_path / "toy", **FAST)
    other = lab.train("toy", total_steps=10, run_dir=tmp_path / "other", seed=1, device="cpu")
    before, others = snapshot(run.path), snapshot(other.path)
    assert_one_line_error(lab_cli("export", run.path, "--format", "diffusers"), "toy runs export as safetensors")
    assert_one_line_error(lab_cli("export", run.path, "--bogus", "1"), "--bogus", "lab export --help")
    assert_one_line_error(lab_cli("export", run.path, "--format", "onnx"), "onnx")
    for out in (run.path, other.path, tmp_path / "toy" / "."):
        assert_one_line_error(lab_cli("export", run.path, "--out", out), "is a run folder")
    assert snapshot(run.path) == before and snapshot(other.path) == others


def test_a_diffusers_export_draws_the_same_samples_from_the_same_seed(tmp_path):
    diffusers = pytest.importorskip("diffusers")
    pytest.importorskip("safetensors")
    run = lab.train("ddpm", data="digits", total_steps=3, eval_samples=4, diffusion_steps=40,
                    attention_resolutions=(8,), run_dir=tmp_path / "ddpm", **FAST)
    pipe = lab.load(run.path, checkpoint="last")
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():                       # weights far from their zero init, so every layer counts
        for p in pipe.algorithm.ema.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=generator))
    from generative.diffusion.export import diffusers_files
    for name, content in diffusers_files(pipe.algorithm).items():
        (tmp_path / "hf" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "hf" / name).write_bytes(content)
    ours = pipe(n=3, seed=7, sampler="ddpm")
    theirs = diffusers.DDPMPipeline.from_pretrained(tmp_path / "hf")(
        batch_size=3, generator=torch.Generator().manual_seed(7), num_inference_steps=40, output_type="np").images
    theirs = torch.from_numpy(theirs).permute(0, 3, 1, 2)
    assert theirs.shape == ours.shape
    assert torch.allclose(ours, theirs, atol=2e-4), (ours - theirs).abs().max()
    assert export(run.path, "diffusers", "last", tmp_path / "cli").joinpath("unet", "config.json").exists()
