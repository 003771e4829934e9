"""DDPM: the schedule's maths, the samplers with a perfect denoiser, the networks' shapes, a short
learning run on the 8-Gaussian ring, exact resume and the `lab` commands."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from generative.diffusion.algo import Algorithm, Config, SampleOptions
from generative.diffusion.mlp import MLPDenoiser
from generative.diffusion.sampler import (ancestral_coefficients, ddim_coefficients, ddim_sample, ddpm_sample,
                                          guided, timesteps_for)
from generative.diffusion.schedule import NoiseSchedule, cosine_betas, linear_betas
from generative.diffusion.unet import UNet
from lab.runtime import RunOptions, Runtime
from lab.session import train_in_memory


@pytest.fixture(params=["linear", "cosine"])
def schedule(request):
    return NoiseSchedule.create(request.param, 1000)


# ---------------------------------------------------------------------------- schedule
def test_linear_and_cosine_betas_are_the_published_ones():
    betas = linear_betas(1000)
    assert betas.dtype == torch.float64 and betas[0] == pytest.approx(1e-4) and betas[-1] == pytest.approx(0.02)
    alpha_bar = torch.cumprod(1 - cosine_betas(1000), 0)
    f = lambda t: math.cos((t / 1000 + 0.008) / 1.008 * math.pi / 2) ** 2
    for t in (0, 250, 500, 900):   # ᾱ_t = f(t+1)/f(0) with 0-based t
        assert alpha_bar[t].item() == pytest.approx(f(t + 1) / f(0), rel=1e-9)


def test_closed_form_matches_the_iterated_chain(schedule):
    """Run q(x_t | x_{t-1}) step by step for N = 20,000 chains and compare mean and variance with
    q(x_t | x_0) = N(sqrt(ᾱ_t) x_0, (1 - ᾱ_t) I). Monte-Carlo standard errors are <= 0.0071 for the
    mean and <= 0.01 for the variance; tolerance 0.03 (over 3 standard errors)."""
    gen = torch.Generator().manual_seed(0)
    n, x0 = 20_000, torch.tensor([1.5, -0.7])
    x = x0.expand(n, 2).clone()
    betas = schedule.betas
    checks = {10, 100, 400, 999}
    for t in range(schedule.num_steps):
        x = (1 - betas[t]).sqrt() * x + betas[t].sqrt() * torch.randn(n, 2, generator=gen)
        if t in checks:
            closed = schedule.add_noise(x0.expand(n, 2), torch.full((n,), t), torch.randn(n, 2, generator=gen))
            ab = schedule.alphas_cumprod64[t].float()
            for draw in (x, closed):
                torch.testing.assert_close(draw.mean(0), ab.sqrt() * x0, atol=0.03, rtol=0)
                torch.testing.assert_close(draw.var(0), (1 - ab).expand(2), atol=0.03, rtol=0)


def test_posterior_is_the_product_of_the_two_gaussians(schedule):
    """q(x_{t-1} | x_t, x_0) ∝ q(x_t | x_{t-1}) q(x_{t-1} | x_0): precision α_t/β_t + 1/(1-ᾱ_{t-1}),
    mean (sqrt(α_t)/β_t x_t + sqrt(ᾱ_{t-1})/(1-ᾱ_{t-1}) x_0) / precision; compared at t >= 1."""
    betas = schedule.betas.double()
    ab = schedule.alphas_cumprod64
    t = torch.tensor([1, 5, 300, 999])
    x0, xt = torch.randn(4, 3), torch.randn(4, 3)
    mean, var = schedule.posterior(x0, xt, t)
    alpha, ab_prev = 1 - betas[t], ab[t - 1]
    precision = alpha / betas[t] + 1 / (1 - ab_prev)
    expected_mean = (alpha.sqrt() / betas[t])[:, None] * xt.double() + (ab_prev.sqrt() / (1 - ab_prev))[:, None] * x0.double()
    torch.testing.assert_close(var.squeeze(1).double(), 1 / precision, rtol=1e-5, atol=1e-9)
    torch.testing.assert_close(mean.double(), expected_mean / precision[:, None], rtol=1e-4, atol=1e-5)
    # at t = 0 the posterior is a point mass on x_0
    mean0, var0 = schedule.posterior(x0, xt, torch.zeros(4, dtype=torch.long))
    torch.testing.assert_close(mean0, x0)
    assert (var0 == 0).all()


def test_ancestral_coefficients_on_the_full_sequence_are_the_posterior(schedule):
    c = ancestral_coefficients(schedule.alphas_cumprod64, timesteps_for(1000, 1000))
    backwards = torch.arange(999, -1, -1)
    torch.testing.assert_close(c["coef_x0"].float(), schedule.posterior_coef_x0[backwards])
    torch.testing.assert_close(c["coef_xt"].float(), schedule.posterior_coef_xt[backwards])
    torch.testing.assert_close(c["std"][:-1].float() ** 2, schedule.posterior_variance[backwards][:-1])
    # DDIM with η = 1 is the ancestral sampler with σ² = β̃ (Song et al., 2021)
    d = ddim_coefficients(schedule.alphas_cumprod64, timesteps_for(1000, 20), eta=1.0)
    a = ancestral_coefficients(schedule.alphas_cumprod64, timesteps_for(1000, 20))
    torch.testing.assert_close(d["std"][:-1], a["std"][:-1])


def test_prediction_targets_convert_back(schedule):
    x0, noise = torch.randn(6, 2), torch.randn(6, 2)
    t = torch.tensor([0, 1, 10, 500, 900, 999])
    xt = schedule.add_noise(x0, t, noise)
    for prediction in ("eps", "v", "x0"):
        x0_hat, eps_hat = schedule.x0_and_eps(schedule.target(prediction, x0, t, noise), xt, t, prediction)
        torch.testing.assert_close(x0_hat, x0, atol=2e-3, rtol=1e-3)
        torch.testing.assert_close(eps_hat[t > 0], noise[t > 0], atol=2e-3, rtol=1e-3)


# ---------------------------------------------------------------------------- samplers
def perfect(schedule, x0, prediction):
    """The exact network output for known x_0: the ε (or v, or x_0) that explains x_t."""
    def denoise(x, t):
        a = schedule.sqrt_alphas_cumprod[t][:, None, None, None]
        s = schedule.sqrt_one_minus_alphas_cumprod[t][:, None, None, None]
        eps = (x - a * x0) / s
        return schedule.target(prediction, x0, t, eps)
    return denoise


@pytest.mark.parametrize("prediction", ["eps", "v", "x0"])
def test_both_samplers_return_x0_with_a_perfect_denoiser(schedule, prediction):
    gen = torch.Generator().manual_seed(1)
    x0 = torch.rand(4, 1, 6, 6, generator=gen) * 2 - 1
    x_T = torch.randn(x0.shape, generator=gen)
    runs = [ddpm_sample(perfect(schedule, x0, prediction), schedule, x_T, prediction=prediction, generator=gen),
            ddpm_sample(perfect(schedule, x0, prediction), schedule, x_T, steps=37, variance="beta",
                        prediction=prediction, generator=gen),
            ddim_sample(perfect(schedule, x0, prediction), schedule, x_T, steps=50, prediction=prediction),
            ddim_sample(perfect(schedule, x0, prediction), schedule, x_T, steps=7, eta=1.0, prediction=prediction,
                        generator=gen)]
    for x, _ in runs:
        torch.testing.assert_close(x, x0, atol=1e-4, rtol=0)


def test_ddim_with_eta_zero_is_deterministic_given_x_T():
    torch.manual_seed(0)
    schedule = NoiseSchedule.create("linear", 100)
    net = MLPDenoiser(2, 32, 2).eval()
    x_T = torch.randn(16, 2)
    denoise = lambda x, t: net(x, t)
    a, _ = ddim_sample(denoise, schedule, x_T, steps=20, eta=0.0, generator=torch.Generator().manual_seed(1))
    b, _ = ddim_sample(denoise, schedule, x_T, steps=20, eta=0.0, generator=torch.Generator().manual_seed(2))
    c, _ = ddim_sample(denoise, schedule, x_T, steps=20, eta=1.0, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)


def test_sampler_records_frames_from_x_T_to_x_0():
    schedule = NoiseSchedule.create("linear", 100)
    x0 = torch.zeros(3, 1, 4, 4)
    x_T = torch.randn(3, 1, 4, 4)
    x, frames = ddim_sample(perfect(schedule, x0, "eps"), schedule, x_T, steps=20, frames=5)
    assert frames.shape == (6, 1, 4, 4)
    torch.testing.assert_close(frames[0], x_T[0])
    torch.testing.assert_close(frames[-1], x[0])


def test_classifier_free_guidance_combines_the_two_passes():
    calls = []

    def model(x, t, labels):
        calls.append(labels.clone())
        return torch.where(labels == 10, 1.0, 3.0)[:, None].expand_as(x)   # unconditional 1, conditional 3

    denoise = guided(model, torch.tensor([2, 7]), 2.5, null_label=10)
    out = denoise(torch.zeros(2, 4), torch.zeros(2, dtype=torch.long))
    torch.testing.assert_close(out, torch.full((2, 4), 1.0 + 2.5 * (3.0 - 1.0)))
    assert len(calls) == 1 and calls[0].tolist() == [2, 7, 10, 10]   # one batched pass of 2B


# ---------------------------------------------------------------------------- networks
@pytest.mark.parametrize("size,mults", [(8, (1, 2)), (16, (1, 2, 2)), (28, (1, 2, 2)), (32, (1, 2, 2, 2))])
def test_unet_keeps_the_input_shape(size, mults):
    net = UNet(3 if size == 32 else 1, 8, mults, attention_resolutions=(size // 2,), image_size=size, num_classes=10)
    x = torch.randn(2, net.stem.in_channels, size, size)
    t = torch.tensor([0, 999])
    assert net(x, t, torch.tensor([3, 10])).shape == x.shape
    assert net(x, t).shape == x.shape


# ---------------------------------------------------------------------------- the algorithm
def _algorithm(**overrides) -> Algorithm:
    return Algorithm(Config(**overrides), Runtime(RunOptions(device="cpu", seed=0)))


def test_a_short_run_on_the_ring_puts_most_samples_near_the_modes():
    config = Config(data="ring8", total_steps=600, batch_size=256, lr=2e-3)
    algo = train_in_memory("ddpm", config, RunOptions(device="cpu", seed=0, eval_every=600)).algorithm
    samples, _ = algo.generate(1000, sampler="ddim", steps=50)
    toy = algo.toy
    distance, mode = torch.cdist(samples, toy.centers).min(1)
    near = distance < 3 * toy.std * 2      # within 6 std = 0.12 of a centre (the ring's radius is 2)
    assert near.float().mean() > 0.5     # 0.83 measured; an untrained model puts < 0.2 there
    assert len(set(mode[near].tolist())) == 8
    untrained = _algorithm(data="ring8").generate(1000, steps=50)[0]
    assert (torch.cdist(untrained, toy.centers).min(1).values < 0.12).float().mean() < 0.2


def test_resume_continues_exactly():
    kwargs = dict(data="digits", width=8, channel_mults=(1, 2), image_size=8, batch_size=16, total_steps=6,
                  conditional=True, warmup_steps=2)
    straight = _algorithm(**kwargs)
    for step in range(6):
        straight.train_step(step)
    first = _algorithm(**kwargs)
    for step in range(3):
        first.train_step(step)
    state = first.state_dict()
    resumed = _algorithm(**kwargs)
    resumed.load_state_dict(state)
    for step in range(3, 6):
        resumed.train_step(step)
    for a, b in zip(straight.state_dict()["ema"].values(), resumed.state_dict()["ema"].values()):
        assert torch.equal(a, b)


def test_config_refuses_bad_values():
    from lab.errors import LabError
    with pytest.raises(LabError, match="--image-size"):
        Config(data="digits", image_size=18)
    with pytest.raises(LabError, match="--conditional"):
        Config(data="ring8", conditional=True)
    with pytest.raises(LabError, match="--prediction"):
        Config(prediction="score")
    with pytest.raises(LabError, match="--sampler"):
        SampleOptions(sampler="euler")


def test_lab_train_and_sample_digits(lab, tmp_path):
    run = tmp_path / "run"
    r = lab("train", "ddpm", "--data", "digits", "--image-size", "8", "--width", "8",
                         "--channel-mults", "1", "2", "--conditional", "--total-steps", "4", "--batch-size", "16",
                         "--eval-samples", "20", "--run-dir", run)
    assert r.returncode == 0, r.stderr
    assert (run / "checkpoints" / "last.pt").exists()
    assert any("eval/fid" in line for line in (run / "metrics.jsonl").read_text().splitlines())
    r = lab("sample", run, "--n", "6", "--sampler", "ddim", "--steps", "5", "--label", "7",
                         "--guidance", "3.0", "--seed", "0")
    assert r.returncode == 0, r.stderr
    files = {p.name.split("-step")[0]: p for p in (run / "samples").iterdir()}
    data = np.load(files["ddim5"])
    assert data["samples"].shape == (6, 1, 8, 8) and (data["labels"] == 7).all()
    assert "ddim5-grid" in files and "ddim5-denoising" in files
    r = lab("sample", run, "--n", "2", "--steps", "20", "--seed", "1")   # ancestral, 20 respaced steps
    assert r.returncode == 0, r.stderr
    r = lab("sample", run, "--label", "12")
    assert r.returncode == 2 and r.stderr.strip().splitlines() == ["lab: error: --label must be in [0, 9], got 12."]
    r = lab("sample", run, "--steps", "5000")
    assert r.returncode == 2 and "--steps" in r.stderr and "Traceback" not in r.stderr


def test_lab_train_refuses_a_bad_dataset(lab, tmp_path):
    result = lab("train", "ddpm", "--data", "digts", "--run-dir", tmp_path / "x")
    assert result.returncode == 2 and "did you mean digits" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "x").exists()


# ---------------------------------------------------------------------------- the variational bound
def _gaussian_nll(x, mean, log_var):
    return 0.5 * (math.log(2 * math.pi) + log_var + (x - mean) ** 2 / log_var.exp())


def test_bound_equals_the_true_negative_log_likelihood_when_the_reverse_process_is_exact():
    """Data x_0 ~ N(m, s²) per dimension: every marginal q(x_t) is Gaussian, so the true reverse step
    q(x_{t-1} | x_t) is a Gaussian in closed form. With it as p_θ (and a continuous Gaussian decoder)
    the bound's gap KL(q(x_{1:T} | x_0) || p_θ(x_{1:T} | x_0)) vanishes up to the prior's mismatch
    (ᾱ_T ≈ 4e-5), so the mean bound matches the true -log p(x_0). The fixed-variance reverse step
    with the optimal mean E[x_0 | x_t] is a strictly looser bound."""
    from generative.diffusion.bound import reverse_log_variance, variational_bound
    schedule = NoiseSchedule.create("linear", 200, dtype=torch.float64)
    ab = schedule.alphas_cumprod64
    m, s = 0.3, 0.5
    x0 = m + s * torch.randn(5000, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    true_nll = _gaussian_nll(x0, torch.tensor(m), torch.tensor(2 * math.log(s))).sum(1)

    def marginal_variance(alpha_bar):
        return alpha_bar * s ** 2 + 1 - alpha_bar

    def exact(x_t, t):
        ab_t = ab[t][:, None]
        ab_prev = torch.where(t > 0, ab[(t - 1).clamp(min=0)], torch.ones_like(ab[t]))[:, None]
        v_t, v_prev = marginal_variance(ab_t), marginal_variance(ab_prev)
        gain = (ab_t / ab_prev).sqrt() * v_prev / v_t              # Cov(x_{t-1}, x_t) / Var(x_t)
        mean = ab_prev.sqrt() * m + gain * (x_t - ab_t.sqrt() * m)
        return mean, (v_prev - gain ** 2 * v_t).log().expand_as(x_t)

    def fixed_variance(x_t, t):
        ab_t = ab[t][:, None]
        x0_mean = m + ab_t.sqrt() * s ** 2 / marginal_variance(ab_t) * (x_t - ab_t.sqrt() * m)   # E[x_0 | x_t]
        return schedule.posterior(x0_mean, x_t, t)[0], reverse_log_variance(schedule, t, x_t)

    bound = variational_bound(exact, schedule, x0, _gaussian_nll, torch.Generator().manual_seed(1))
    gap = bound["total"] - true_nll
    assert bound["prior"].mean() < 1e-3
    assert abs(gap.mean().item()) < 4 * gap.std().item() / math.sqrt(len(gap)) + 0.01, (gap.mean(), gap.std())
    looser = variational_bound(fixed_variance, schedule, x0, _gaussian_nll, torch.Generator().manual_seed(1))
    assert (looser["total"] - true_nll).mean() > 1.0


@pytest.mark.parametrize("levels", [2, 17, 256])
def test_discretized_gaussian_decoder_bins_sum_to_one(levels):
    from generative.likelihood import discretized_gaussian_log_prob
    grid = torch.linspace(-1, 1, levels, dtype=torch.float64).view(levels, 1)
    mean = torch.tensor([0.0, 0.93, -3.0, 0.3, 1.0], dtype=torch.float64)
    std = torch.tensor([0.1, 0.004, 0.5, 30.0, 1e-3], dtype=torch.float64)
    p = discretized_gaussian_log_prob(grid, mean, std.log(), levels).exp()
    torch.testing.assert_close(p.sum(0), torch.ones(5, dtype=torch.float64), atol=1e-9, rtol=0)
    # a narrow Gaussian puts its mass on the bin it sits in; a tail bin gets the whole tail
    assert p[-1, 4] > 0.999 and p[0, 2] > 0.999


def test_learned_variance_interpolates_between_beta_tilde_and_beta():
    from generative.diffusion.bound import reverse_log_variance
    schedule = NoiseSchedule.create("linear", 100)
    t = torch.tensor([0, 1, 50, 99])
    like = torch.zeros(4, 1, 2, 2)
    low = reverse_log_variance(schedule, t, like, -torch.ones_like(like))
    high = reverse_log_variance(schedule, t, like, torch.ones_like(like))
    torch.testing.assert_close(low, reverse_log_variance(schedule, t, like))
    torch.testing.assert_close(high[:, 0, 0, 0], schedule.betas[t].log())
    torch.testing.assert_close(low[1:, 0, 0, 0], schedule.posterior_variance[t[1:]].log())
    assert torch.all(low < high)


def test_hybrid_loss_trains_the_variance_channels():
    algo = _algorithm(data="digits", image_size=8, width=8, channel_mults=(1, 2), batch_size=16, total_steps=3,
                      learn_variance=True, binarize=True)
    head = algo.model.head[-1]
    assert head.out_channels == 2
    algo.train_step(0)
    assert head.weight.grad[1].abs().sum() > 0   # the v channel learns from L_vlb


def test_level_posterior_is_bayes_rule_over_the_levels():
    schedule = NoiseSchedule.create("linear", 1000)
    t = torch.tensor([0, 10, 300, 999])
    x_t = torch.randn(4, 1, 3, 3)
    logits = torch.randn(4, 2, 3, 3)                    # levels -1 and +1
    log_p = schedule.level_log_posterior(logits, x_t, t, torch.tensor([-1.0, 1.0]))
    a, s = schedule.sqrt_alphas_cumprod[t].view(-1, 1, 1, 1), schedule.sqrt_one_minus_alphas_cumprod[t].view(-1, 1, 1, 1)
    # two levels: p(x_0 = +1 | x_t) = sigmoid(f_+ - f_- + log N(x_t; a, s²) - log N(x_t; -a, s²)) = sigmoid(... + 2 a x_t / s²)
    expected = torch.sigmoid(logits[:, 1:] - logits[:, :1] + 2 * a * x_t / s.square())
    torch.testing.assert_close(log_p[:, :, 1].exp(), expected, atol=1e-5, rtol=1e-4)
    many = schedule.level_log_posterior(torch.randn(4, 17 * 2, 3, 3), torch.randn(4, 2, 3, 3), t, torch.linspace(-1, 1, 17))
    assert many.shape == (4, 2, 17, 3, 3)
    torch.testing.assert_close(many.exp().sum(2), torch.ones(4, 2, 3, 3))


def test_level_prediction_makes_the_small_noise_terms_of_the_bound_vanish_even_untrained():
    """At small t the likelihood of x_t decides x_0: x̂_0 is exact whatever the network says, so L_{t-1} ~ 0,
    while an ε-predictor off by a little pays about ½ ||ε - ε̂||² · β_t / (1 - ᾱ_{t-1}) there."""
    from generative.diffusion.bound import reverse_step, step_term
    schedule = NoiseSchedule.create("linear", 1000)
    levels = torch.tensor([-1.0, 1.0])
    x0 = torch.bernoulli(torch.full((64, 1, 8, 8), 0.5), generator=torch.Generator().manual_seed(0)) * 2 - 1
    t = torch.arange(1, 6).repeat_interleave(13)[:64]
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(1))
    x_t = schedule.add_noise(x0, t, noise)
    logits = 3 * torch.randn(64, 2, 8, 8, generator=torch.Generator().manual_seed(2))   # an untrained network's guess
    no_decoder = lambda x, mean, log_var: torch.zeros_like(x)   # t > 0 here: L_0 is never asked for
    x0_hat = schedule.level_mean(schedule.level_log_posterior(logits, x_t, t, levels), levels)
    kl = step_term(schedule, x0, x_t, t, *reverse_step(schedule, x0_hat, x_t, t, "x0"), no_decoder)
    assert kl.max() < 1e-4
    eps_hat = noise + 0.1 * torch.randn(x0.shape, generator=torch.Generator().manual_seed(3))
    kl_eps = step_term(schedule, x0, x_t, t, *reverse_step(schedule, eps_hat, x_t, t, "eps"), no_decoder)
    assert kl_eps.mean() > 0.05 and kl_eps.mean() > 1000 * kl.mean()


def test_level_prediction_trains_samples_and_bounds_through_the_level_softmax():
    algo = _algorithm(data="digits", image_size=8, width=8, channel_mults=(1, 2), batch_size=16, total_steps=3,
                      diffusion_steps=50, learn_variance=True, binarize=True, prediction="levels")
    assert algo.model.head[-1].out_channels == 2 + 1      # one logit per level, then the variance channel
    metrics = algo.train_step(0)
    assert torch.isfinite(metrics["train/loss"]) and algo.model.head[-1].weight.grad[:2].abs().sum() > 0
    images, _ = algo.generate(6, sampler="ddpm", steps=50)
    assert images.shape == (6, 1, 8, 8) and images.min() >= 0 and images.max() <= 1
    bound = algo.test_bound(0)
    assert torch.isfinite(bound["total"]).all() and bound["total"].min() > 0
    assert bound["steps"].shape == (len(bound["total"]), 50)          # L_0 .. L_49 of every test image
    torch.testing.assert_close(bound["steps"].sum(1), bound["total"] - bound["prior"])


def test_lab_eval_reports_the_bound_in_bits_per_dim(lab, tmp_path):
    run = tmp_path / "run"
    r = lab("train", "ddpm", "--image-size", "8", "--width", "8", "--channel-mults", "1", "2", "--diffusion-steps",
            "50", "--learn-variance", "--total-steps", "4", "--batch-size", "16", "--eval-samples", "8",
            "--run-dir", run)
    assert r.returncode == 0, r.stderr
    r = lab("eval", run, "--n", "20", "--steps", "5", "--json")
    assert r.returncode == 0, r.stderr
    import json
    metrics = json.loads(r.stdout)["metrics"]
    parts = metrics["eval/bound_prior"] + metrics["eval/bound_diffusion"] + metrics["eval/bound_decoder"]
    assert metrics["eval/bound_nll"] == pytest.approx(parts)
    assert metrics["eval/bound_bits_per_dim"] == pytest.approx(metrics["eval/bound_nll"] / (64 * math.log(2)))
    assert metrics["eval/bound_decoder"] > 0 and metrics["eval/bound_prior"] >= 0


@pytest.mark.parametrize("argv, words", [
    (["--data", "ring8", "--learn-variance"], "--learn-variance needs image data"),
    (["--data", "digits", "--learn-variance"], "--image-size 8"),
    (["--data", "ring8", "--binarize"], "--binarize needs image data"),
    (["--data", "ring8", "--prediction", "levels"], "--prediction levels needs images on discrete levels"),
    (["--data", "digits", "--prediction", "levels"], "--image-size 8"),
])
def test_bound_options_refuse_data_without_discrete_levels(lab, tmp_path, argv, words):
    result = lab("train", "ddpm", *argv, "--run-dir", tmp_path / "x")
    assert result.returncode == 2 and words in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "x").exists()
