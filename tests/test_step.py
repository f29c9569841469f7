"""The shared training step (anodiff/step.py): the DDPM noising against diffusers, the draws in their order,
one timestep per pair, and the optimiser state round trip."""

from __future__ import annotations

import torch
from diffusers import DDPMScheduler

from anodiff.train.step import add_noise, load_optimizer_tensors, make_optimizer, optimizer_tensors, pair_loss


def sd15_scheduler() -> DDPMScheduler:
    return DDPMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000)


def test_add_noise_is_diffusers_add_noise():
    scheduler = sd15_scheduler()
    g = torch.Generator().manual_seed(0)
    x, noise = torch.randn(6, 4, 8, 8, generator=g), torch.randn(6, 4, 8, 8, generator=g)
    t = torch.tensor([0, 1, 499, 500, 998, 999])
    torch.testing.assert_close(
        add_noise(scheduler.alphas_cumprod, x, noise, t), scheduler.add_noise(x, noise, t), atol=0, rtol=0
    )


def test_pair_loss_draws_latents_timesteps_and_noise_in_order_with_one_timestep_per_pair():
    scheduler = sd15_scheduler()
    batch = {"image": torch.zeros(3, 3, 16, 16)}  # the latents come from sample_latents; pixels are not used
    unscaled = {"pairs": torch.randn(6, 4, 2, 2), "bg": torch.randn(3, 4, 2, 2)}
    seen = {}

    def sample_latents(step_batch, keys, g):
        torch.randn(1, generator=g)  # a posterior sample takes draws: the order must stay
        return unscaled["pairs"] if len(keys) == 2 else unscaled["bg"]

    def forward(noisy, timesteps, background):
        seen.update(noisy=noisy, timesteps=timesteps, background=background)
        return noisy * 0

    g = torch.Generator().manual_seed(7)
    loss = pair_loss(batch, g, sample_latents, forward, scheduler.alphas_cumprod, 0.5, torch.device("cpu"), bcm=True)
    replay = torch.Generator().manual_seed(7)
    torch.randn(1, generator=replay)
    t = torch.randint(0, 1000, (3,), generator=replay)
    noise = torch.randn(6, 4, 2, 2, generator=replay)
    torch.randn(1, generator=replay)
    bg_noise = torch.randn(3, 4, 2, 2, generator=replay)
    assert torch.equal(seen["timesteps"], t.repeat_interleave(2))  # both rows of a pair share the timestep
    torch.testing.assert_close(
        seen["noisy"], scheduler.add_noise(unscaled["pairs"] * 0.5, noise, t.repeat_interleave(2))
    )
    torch.testing.assert_close(seen["background"], scheduler.add_noise(unscaled["bg"], bg_noise, t))  # unscaled
    torch.testing.assert_close(loss, noise.square().mean())


def test_optimizer_state_round_trip_continues_identically():
    def run(steps, state=None):
        torch.manual_seed(0)
        p = torch.nn.Parameter(torch.randn(5))
        opt = make_optimizer([p], 1e-2, 1e-2, "off", torch.device("cpu"))
        if state is not None:
            p.data.copy_(state[0])
            load_optimizer_tensors(opt, state[1])
        for _ in range(steps):
            (p.square().sum()).backward()
            opt.step()
            opt.zero_grad()
        return p.detach().clone(), optimizer_tensors(opt)

    whole, _ = run(5)
    part = run(3)
    resumed, _ = run(2, part)
    torch.testing.assert_close(resumed, whole, atol=0, rtol=0)


def test_forward_inputs_are_on_the_training_device_whatever_the_latents_device():
    seen = {}

    def forward(noisy, timesteps, background):
        seen.update(noisy=noisy.device, timesteps=timesteps.device, background=background.device)
        return noisy

    def cpu_latents(step_batch, keys, g):
        return torch.zeros(4 if len(keys) == 2 else 2, 4, 2, 2)

    meta = torch.device("meta")
    pair_loss(
        {},
        torch.Generator().manual_seed(0),
        cpu_latents,
        forward,
        sd15_scheduler().alphas_cumprod,
        0.18215,
        meta,
        bcm=True,
    )
    assert seen == {"noisy": meta, "timesteps": meta, "background": meta}
