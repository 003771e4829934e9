"""GANs: each loss on hand-made discriminator outputs, the gradient penalty and spectral norm against
their definitions, conditioning, exact resume, and short runs that must learn."""
import copy
import json
import math

import numpy as np
import pytest
import torch

from generative.gan import losses
from generative.gan.algo import Algorithm, Config, SampleOptions, slerp, truncated_normal
from generative.gan.rejection import drs_score, rejection_sample
from generative.gan.nets import (DCGANGenerator, MLPGenerator, dcgan_discriminator, mlp_discriminator, pack,
                                 spectral_norm)
from lab.runtime import RunOptions, Runtime


def grad_of(loss_fn, *values):
    """The loss and d loss / d input for each hand-made tensor of discriminator outputs."""
    inputs = [torch.tensor(v, dtype=torch.float64, requires_grad=True) for v in values]
    loss = loss_fn(*inputs)
    return loss.item(), [g.tolist() for g in torch.autograd.grad(loss, inputs)]


def sigmoid(x):
    return 1 / (1 + math.exp(-x))


# ---------------------------------------------------------------- losses
def test_minimax_discriminator_loss_is_the_binary_cross_entropy_of_the_game():
    # -[log D(x) + log(1 - D(G(z)))] with D = sigmoid(logit), real logit 2, fake logit -1
    value, (d_real, d_fake) = grad_of(losses.d_loss_minimax, [2.0], [-1.0])
    assert value == pytest.approx(-math.log(sigmoid(2.0)) - math.log(1 - sigmoid(-1.0)))
    assert d_real == pytest.approx([-(1 - sigmoid(2.0))])    # push D(x) up
    assert d_fake == pytest.approx([sigmoid(-1.0)])          # push D(G(z)) down
    assert losses.d_loss_minimax(torch.zeros(4), torch.zeros(4)).item() == pytest.approx(2 * math.log(2))


def test_minimax_generator_loss_saturates_where_the_non_saturating_one_does_not():
    # D confidently rejects the fakes (logit -10): the saturating gradient vanishes
    value, (grad,) = grad_of(losses.g_loss_minimax, [-10.0, 0.0])
    assert value == pytest.approx((math.log(1 - sigmoid(-10.0)) + math.log(0.5)) / 2)
    assert grad == pytest.approx([-sigmoid(-10.0) / 2, -0.5 / 2])
    assert abs(grad[0]) < 1e-4
    value, (grad,) = grad_of(losses.g_loss_non_saturating, [-10.0, 0.0])
    assert value == pytest.approx((-math.log(sigmoid(-10.0)) - math.log(0.5)) / 2)
    assert grad == pytest.approx([-(1 - sigmoid(-10.0)) / 2, -0.5 / 2])
    assert abs(grad[0]) > 0.49


def test_wasserstein_losses():
    value, (d_real, d_fake) = grad_of(losses.d_loss_wasserstein, [1.0, 3.0], [0.0, 2.0])
    assert value == pytest.approx(1.0 - 2.0)                 # E[D(G(z))] - E[D(x)]
    assert d_real == [-0.5, -0.5] and d_fake == [0.5, 0.5]
    value, (grad,) = grad_of(losses.g_loss_wasserstein, [1.0, 3.0])
    assert value == -2.0 and grad == [-0.5, -0.5]


def test_hinge_losses_only_count_margin_violations():
    value, (d_real, d_fake) = grad_of(losses.d_loss_hinge, [0.5, 2.0], [-2.0, 0.5])
    assert value == pytest.approx(0.25 + 0.75)               # mean(relu(1 - real)) + mean(relu(1 + fake))
    assert d_real == [-0.5, 0.0] and d_fake == [0.0, 0.5]
    value, (grad,) = grad_of(losses.g_loss_hinge, [0.5, -1.5])
    assert value == pytest.approx(0.5) and grad == [-0.5, -0.5]


def test_gradient_penalty_on_a_linear_critic_is_lambda_free_definition():
    # D(x) = <w, x> + b has grad D = w everywhere, so the penalty is (||w|| - 1)^2 = (5 - 1)^2
    w = torch.tensor([3.0, 4.0], requires_grad=True)
    critic = lambda x: x @ w + 0.7
    real, fake = torch.randn(6, 2), torch.randn(6, 2)
    penalty = losses.gradient_penalty(critic, real, fake, torch.rand(6))
    assert penalty.item() == pytest.approx(16.0)
    (grad_w,) = torch.autograd.grad(penalty, w)              # d/dw (||w|| - 1)^2 = 2 (||w|| - 1) w / ||w||
    assert grad_w.tolist() == pytest.approx([2 * 4 * 0.6, 2 * 4 * 0.8])
    # images: the norm is over all pixels of a sample
    w_img = torch.full((1, 2, 2), 0.25)
    image_critic = lambda x: (x * w_img).flatten(1).sum(1)
    penalty = losses.gradient_penalty(image_critic, torch.randn(3, 1, 2, 2), torch.randn(3, 1, 2, 2), torch.rand(3))
    assert penalty.item() == pytest.approx((0.5 - 1.0) ** 2)


def test_gradient_penalty_interpolates_with_epsilon():
    # a critic whose gradient norm is |x| (D = x^2 / 2 in 1-D) sees x_hat = eps real + (1 - eps) fake
    critic = lambda x: (x ** 2 / 2).sum(1)
    real, fake = torch.tensor([[4.0]]), torch.tensor([[0.0]])
    assert losses.gradient_penalty(critic, real, fake, torch.tensor([0.5])).item() == pytest.approx((2.0 - 1) ** 2)
    assert losses.gradient_penalty(critic, real, fake, torch.tensor([1.0])).item() == pytest.approx((4.0 - 1) ** 2)


def test_r1_penalty_is_the_squared_gradient_norm_on_real_data():
    # D(x) = <w, x> + b: grad D = w, so R1 = ||w||^2 = 25 whatever the data
    w = torch.tensor([3.0, 4.0], requires_grad=True)
    penalty = losses.r1_penalty(lambda x: x @ w + 0.7, torch.randn(5, 2))
    assert penalty.item() == pytest.approx(25.0)
    (grad_w,) = torch.autograd.grad(penalty, w)              # d/dw ||w||^2 = 2 w
    assert grad_w.tolist() == pytest.approx([6.0, 8.0])
    # D(x) = sum(x^2) / 2 has grad D = x: R1 is the mean squared norm of the real points, (1 + 25) / 2
    critic = lambda x: (x ** 2 / 2).sum(1)
    assert losses.r1_penalty(critic, torch.tensor([[1.0, 0.0], [3.0, 4.0]])).item() == pytest.approx(13.0)


def test_pack_joins_m_consecutive_samples_into_one_input():
    x = torch.arange(12.0).reshape(6, 2)                     # six 2-D points
    packed = pack(x, 3)
    assert packed.shape == (2, 6)
    assert packed.tolist() == [[0, 1, 2, 3, 4, 5], [6, 7, 8, 9, 10, 11]]
    assert pack(x, 1) is x
    algorithm = Algorithm(tiny_toy(pack=3), Runtime(RunOptions(device="cpu")))
    real, _ = algorithm._real_batch()
    assert real.shape == (32, 6)                             # batch_size packs of 3 points
    assert algorithm.discriminator(real).shape == (32,)
    algorithm.train_step(0)


# ---------------------------------------------------------------- networks
def test_spectral_norm_bounds_the_largest_singular_value():
    torch.manual_seed(0)
    linear = spectral_norm(torch.nn.Linear(20, 30))
    conv = spectral_norm(torch.nn.Conv2d(3, 8, 4, 2, 1))
    with torch.no_grad():
        linear.parametrizations.weight.original.mul_(10.0)
        for _ in range(30):                                   # power iteration runs once per training forward
            linear(torch.randn(5, 20))
            conv(torch.randn(2, 3, 8, 8))
    assert torch.linalg.matrix_norm(linear.weight, 2).item() == pytest.approx(1.0, abs=0.02)
    assert torch.linalg.matrix_norm(conv.weight.flatten(1), 2).item() == pytest.approx(1.0, abs=0.02)
    discriminator = mlp_discriminator(32, 2, use_spectral_norm=True)
    with torch.no_grad():
        for _ in range(30):
            discriminator(torch.randn(8, 2))
    sigmas = [torch.linalg.matrix_norm(m.weight, 2).item() for m in discriminator.modules()
              if isinstance(m, torch.nn.Linear)]
    assert len(sigmas) == 3 and all(s == pytest.approx(1.0, abs=0.02) for s in sigmas)


def test_conditional_networks_depend_on_the_label():
    torch.manual_seed(0)
    z = torch.randn(4, 16)
    for generator in (MLPGenerator(16, 32, 2, num_classes=3), DCGANGenerator(16, 8, 8, 1, num_classes=10)):
        generator.eval()
        out_0 = generator(z, torch.zeros(4, dtype=torch.long))
        out_1 = generator(z, torch.ones(4, dtype=torch.long))
        assert (out_0 - out_1).abs().max() > 1e-3
        assert torch.equal(out_0, generator(z, torch.zeros(4, dtype=torch.long)))
    images = torch.randn(4, 1, 16, 16)
    for conditioning in ("projection", "concat"):
        discriminator = dcgan_discriminator(8, 16, 1, num_classes=10, conditioning=conditioning).eval()
        scores_0 = discriminator(images, torch.zeros(4, dtype=torch.long))
        scores_1 = discriminator(images, torch.ones(4, dtype=torch.long))
        assert scores_0.shape == (4,) and (scores_0 - scores_1).abs().max() > 1e-4


def test_dcgan_shapes_for_8_to_32_pixels():
    for size in (8, 16, 28, 32):
        generator = DCGANGenerator(8, 4, size, 3)
        images = generator(torch.randn(2, 8))
        assert images.shape == (2, 3, size, size) and images.abs().max() <= 1
        assert dcgan_discriminator(4, size, 3)(images).shape == (2,)


def test_latent_helpers():
    rng = torch.Generator().manual_seed(0)
    z = truncated_normal((500, 8), 0.7, rng, "cpu")
    assert z.abs().max() <= 0.7 and z.std() > 0.3
    a, b = torch.randn(3, 8), torch.randn(3, 8)
    path = slerp(a, b, torch.linspace(0, 1, 5))
    assert path.shape == (3, 5, 8)
    assert torch.allclose(path[:, 0], a, atol=1e-5) and torch.allclose(path[:, -1], b, atol=1e-5)


# ---------------------------------------------------------------- discriminator rejection sampling
def test_drs_score_unshifted_is_the_exact_rejection_rule():
    # D~ = log p_data / p_g, M = max p_data / p_g = exp(D~_M): keep x with probability exp(D~(x) - D~_M)
    logits, max_logit = torch.tensor([-9.0, -3.0, -1.0, 0.0, 0.5, 1.0]), 1.0
    kept = torch.sigmoid(drs_score(logits, max_logit))
    assert torch.allclose(kept, torch.exp(logits.double() - max_logit), atol=1e-5)


def test_rejection_sampling_a_wide_gaussian_with_the_ideal_discriminator():
    # p_g = N(0, 2^2), p_data = N(0, 1): the ideal logit log p_data / p_g = log 2 - 3 x^2 / 8
    rng = torch.Generator().manual_seed(0)
    samples, kept = rejection_sample(lambda m: 2 * torch.randn(m, 1, generator=rng),
                                     lambda x: math.log(2) - 3 * x[:, 0] ** 2 / 8, 20_000, 0.5, rng)
    # the kept law p_g(x) sigmoid(F(x) - gamma), gamma = F at the median |x| of p_g (F falls with |x|),
    # integrated on a grid; D~_M = log 2, the logit at x = 0
    x = torch.linspace(-14, 14, 280_001, dtype=torch.float64)
    p_g = torch.exp(-x ** 2 / 8)
    f = drs_score(-3 * x ** 2 / 8 + math.log(2), math.log(2))
    gamma = drs_score(torch.tensor(-3 * (2 * 0.6744897501960817) ** 2 / 8 + math.log(2)), math.log(2))
    weight = p_g * torch.sigmoid(f - gamma)
    expected_std = ((weight * x ** 2).sum() / weight.sum()).sqrt().item()
    assert 0.9 < expected_std < 1.1                         # near p_data's 1, from p_g's 2
    assert samples.shape == (20_000, 1)
    assert samples.std().item() == pytest.approx(expected_std, abs=0.02)
    assert kept == pytest.approx((weight.sum() / p_g.sum()).item(), abs=0.01)


def test_rejection_sampling_is_the_toy_default_and_can_be_turned_off():
    algorithm = Algorithm(tiny_toy(), Runtime(RunOptions(device="cpu")))
    assert algorithm.config.drs_quantile == 0.999 and algorithm.config.instance_noise == 0.5
    assert algorithm.config.n_critic == 2 and Config(data="digits").resolved().n_critic == 1
    assert tiny_toy(pack=2).resolved().drs_quantile == 0.0
    assert Config(data="digits").resolved().drs_quantile == 0.0
    algorithm.train_step(0)
    results = algorithm.evaluate()
    assert {"eval/generator_modes", "eval/generator_high_quality"} <= results.keys()
    assert 0 < results["eval/drs_acceptance"] < 1
    filtered = algorithm.sample(SampleOptions(n=300, seed=1))["samples/samples"].arrays["samples"]
    assert filtered.shape == (300, 2)
    own = algorithm.sample(SampleOptions(n=300, seed=1, drs_quantile=0))["samples/samples"].arrays["samples"]
    z = truncated_normal((300, 8), None, torch.Generator().manual_seed(1), "cpu")
    assert torch.equal(own, algorithm.generate(z))        # --drs-quantile 0: the generator's own samples
    assert not torch.equal(filtered, own)


# ---------------------------------------------------------------- the algorithm
def tiny_toy(**overrides) -> Config:
    return Config(**{"data": "ring8", "hidden": 32, "depth": 2, "latent_dim": 8, "batch_size": 32,
                     "eval_samples": 200, "total_steps": 6, **overrides})


@pytest.mark.parametrize("loss", ["minimax", "wgan-gp"])
def test_resume_is_exact(loss):
    config = tiny_toy(loss=loss, n_critic=2, instance_noise=0.1)
    straight = Algorithm(config, Runtime(RunOptions(seed=3, device="cpu")))
    for step in range(3):
        straight.train_step(step)
    saved = copy.deepcopy(straight.state_dict())   # a checkpoint is a snapshot, not live tensors
    for step in range(3, 6):
        straight.train_step(step)
    resumed = Algorithm(config, Runtime(RunOptions(seed=99, device="cpu")))
    resumed.load_state_dict(saved)
    for step in range(3, 6):
        resumed.train_step(step)
    for a, b in ((straight.generator, resumed.generator), (straight.ema, resumed.ema),
                 (straight.discriminator, resumed.discriminator)):
        for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
            assert torch.equal(x, y), name


def test_only_training_evaluations_keep_a_snapshot_for_the_training_video():
    algorithm = Algorithm(tiny_toy(eval_samples=64), Runtime(RunOptions(device="cpu")))
    algorithm.train_step(0)
    algorithm.evaluate(during_training=True)              # the trainer's evaluation
    assert algorithm.snapshot_steps == [1] and len(algorithm.state_dict()["snapshots"]) == 1
    algorithm.evaluate(during_training=False)             # `lab eval`: the saved state stays as it was
    algorithm.evaluate()
    assert algorithm.snapshot_steps == [1] and len(algorithm.state_dict()["snapshots"]) == 1


def test_instance_noise_anneals_to_zero_at_half_the_run():
    algorithm = Algorithm(tiny_toy(instance_noise=0.5, total_steps=8000), Runtime(RunOptions(device="cpu")))
    x = torch.zeros(20_000, 2)
    for step, sigma in ((0, 0.5), (2000, 0.25), (3000, 0.125)):
        algorithm.step = step
        assert algorithm._instance_noise(x).std().item() == pytest.approx(sigma, rel=0.03)
    for step in (4000, 7999):
        algorithm.step = step
        assert torch.equal(algorithm._instance_noise(x), x)


def test_one_step_counts_n_critic_discriminator_updates():
    algorithm = Algorithm(tiny_toy(n_critic=3), Runtime(RunOptions(device="cpu")))
    algorithm.train_step(0)
    assert algorithm.opt_d.state_dict()["state"][0]["step"].item() == 3
    assert algorithm.opt_g.state_dict()["state"][0]["step"].item() == 1


def test_top_k_generator_loss_sees_only_the_k_best_scored_samples():
    algorithm = Algorithm(tiny_toy(top_k=0.25, top_k_decay=0.5), Runtime(RunOptions(device="cpu")))
    seen, scored = [], []
    g_loss = algorithm.g_loss_fn
    algorithm.g_loss_fn = lambda d_fake: seen.append(d_fake.detach().clone()) or g_loss(d_fake)
    discriminator = algorithm.discriminator

    def recording_discriminator(x, labels=None):
        scores = discriminator(x, labels)
        scored.append(scores.detach().clone())
        return scores

    algorithm.discriminator = recording_discriminator
    for step in range(4):    # k_t = max(0.25, 0.5^t) x 32: 32, 16, 8, 8
        algorithm.step = step
        seen.clear(), scored.clear()
        algorithm._generator_step()
        assert len(seen[0]) == [32, 16, 8, 8][step]
        best = scored[-1].sort(descending=True).values[:len(seen[0])]
        assert torch.equal(seen[0].sort(descending=True).values, best)   # the k highest D(G(z)), no other
    assert Algorithm(tiny_toy(), Runtime(RunOptions(device="cpu")))._top_k(32) == 32   # off by default


def test_bad_flags_give_one_line_errors(lab, tmp_path):
    for args in (["--loss", "wasserstein"], ["--conditional"], ["--data", "ring9"], ["--ema-decay", "1.5"],
                 ["--top-k", "0"], ["--drs-quantile", "1"], ["--data", "digits", "--drs-quantile", "0.5"],
                 ["--pack", "2", "--drs-quantile", "0.5"]):
        result = lab("train", "gan", *args, "--run-dir", tmp_path / "run")
        assert result.returncode == 2, args
        assert result.stderr.startswith("lab: error: ") and result.stderr.count("\n") == 1, result.stderr
    assert not (tmp_path / "run").exists()


def test_short_run_on_the_ring_covers_the_modes_with_sharp_samples(lab, tmp_path):
    # a small, fast configuration (3 layers of 64 units, lr 1e-3, 1,000 steps), not the toy defaults
    result = lab("train", "gan", "--data", "ring8", "--total-steps", 1000, "--hidden", 64, "--depth", 3,
                 "--batch-size", 128, "--lr", 1e-3, "--latent-dim", 2, "--eval-samples", 1000, "--eval-every", 500,
                 "--run-dir", tmp_path / "ring")
    assert result.returncode == 0, result.stderr
    final = [json.loads(line) for line in (tmp_path / "ring" / "metrics.jsonl").read_text().splitlines()]
    final = [row for row in final if "eval/modes" in row][-1]
    # a collapsed G captures 1 mode (with up to 99 % sharp samples); one spread over the plane captures
    # modes with few sharp samples. Seeds 0-2 of this run: 8 modes, 47-58 % of the generator's samples
    # within 3 std (0.06) of a centre, 76-90 % of those rejection sampling keeps
    assert final["eval/generator_modes"] >= 7 and final["eval/modes"] >= 7, final
    assert final["eval/generator_high_quality"] >= 0.35, final
    assert final["eval/high_quality"] >= max(0.6, final["eval/generator_high_quality"] + 0.1), final
    assert (tmp_path / "ring" / "plots").is_dir() and list((tmp_path / "ring" / "videos").glob("training-*"))


def test_conditional_digits_run_samples_a_requested_label(lab, tmp_path):
    run = tmp_path / "digits"
    result = lab("train", "gan", "--data", "digits", "--conditional", "--total-steps", 20, "--channels", 8,
                 "--batch-size", 32, "--eval-samples", 100, "--run-dir", run)
    assert result.returncode == 0, result.stderr
    result = lab("sample", run, "--n", 12, "--label", 3, "--truncation", 0.7)
    assert result.returncode == 0, result.stderr
    saved = np.load(next((run / "samples").glob("samples-*.npz")))
    assert saved["samples"].shape == (12, 1, 8, 8) and (saved["labels"] == 3).all()
    assert list((run / "samples").glob("grid-*.png")) and list((run / "samples").glob("interpolation-*.png"))
    result = lab("sample", run, "--label", 10)
    assert result.returncode == 2 and "--label must be in [0, 9]" in result.stderr
