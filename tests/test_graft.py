"""The training-free graft mode (issue 24): the attention against a direct formulation written out here, the
round trip of inversion and sampling, the embedding cache, the tightened mask and bad inputs."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from tiny_diffusers import randomize_, tiny_unet

from anodiff.graft.attention import GraftMasks, GraftPass
from anodiff.graft.config import GraftSettings
from anodiff.graft.processor import grafted
from anodiff.model.sites import SD15_BY_DIFFUSERS

H = W = 32  # image side; the tiny VAE halves it: a 16x16 latent, token grids 16, 8, 4, 2
LATENT = (16, 16)


def box(top: int, bottom: int, left: int, right: int, shape=(H, W)) -> torch.Tensor:
    m = torch.zeros(shape)
    m[top:bottom, left:right] = 1
    return m


# Both contain pixel (16, 16), so neither mask vanishes at the 2x2 grid under nearest interpolation.
REF_MASK, TGT_MASK = box(10, 26, 8, 24), box(4, 20, 12, 30)


def _grid(n: int) -> tuple[int, int]:
    side = math.isqrt(n)
    return side, side


def _masked_logits(mask: torch.Tensor) -> torch.Tensor:
    """O2MAG's restriction: +mask on included keys (value 1), finfo.min on the others."""
    return mask.masked_fill(mask == 0, torch.finfo(torch.float32).min)


def direct_attention(attn, x, ctx, step, index, is_self, tokens, settings):
    """The graft rules written out per head with O2MAG's additive masks, the ln(1.1) re-weight and tau; the normal
    and reference rows plain attention. Rows [uncond n, r, t; cond n, r, t]."""
    kv = x if is_self else ctx
    q, k, v = attn.to_q(x), attn.to_k(kv), attn.to_v(kv)
    heads = attn.heads
    d = q.shape[-1] // heads
    q, k, v = (t.view(t.shape[0], t.shape[1], heads, d).transpose(1, 2) for t in (q, k, v))
    s = d**-0.5
    out = torch.softmax(q @ k.transpose(-1, -2) * s, -1) @ v
    grid = _grid(q.shape[2])
    near = lambda m: torch.nn.functional.interpolate(m[None, None], size=grid).flatten()
    pool = lambda m: torch.nn.functional.adaptive_max_pool2d(m[None, None], grid).flatten()
    for c in range(2):
        n, r, t = 3 * c, 3 * c + 1, 3 * c + 2
        if is_self and step < settings.early_steps:
            mr, mt = near(REF_MASK), near(TGT_MASK)
            fg = torch.softmax(q[r] @ k[r].transpose(-1, -2) * s + _masked_logits(mr), -1) @ v[r]
            bg_bias = mt.masked_fill(mt == 1, torch.finfo(torch.float32).min)
            bg = torch.softmax(q[n] @ k[n].transpose(-1, -2) * s + bg_bias, -1) @ v[n]
            out[t] = fg * mt[:, None] + bg * (1 - mt[:, None])
        elif is_self and step >= 4 and 9 <= index < 16:
            mr, mt_near, mt = pool(REF_MASK), near(TGT_MASK), pool(TGT_MASK)
            fg_logits = (q[t] @ k[r].transpose(-1, -2) * s + _masked_logits(mr) + mr * math.log(1.1)) / 0.7
            fg = torch.softmax(fg_logits, -1) @ v[r]
            bg_bias = mt_near.masked_fill(mt_near == 1, torch.finfo(torch.float32).min)
            bg = torch.softmax(q[t] @ k[n].transpose(-1, -2) * s + bg_bias, -1) @ v[n]
            out[t] = fg * mt[:, None] + bg * (1 - mt[:, None])
        elif not is_self and c == 1 and 20 <= step < 40:
            probs = torch.softmax(q[t] @ k[t].transpose(-1, -2) * s, -1)
            eq = torch.ones(k.shape[2])
            eq[list(tokens)] = 100.0
            probs = probs * (1 + near(TGT_MASK)[:, None] * (eq[None] - 1))
            out[t] = probs / probs.sum(-1, keepdim=True) @ v[t]
    out = out.transpose(1, 2).reshape(x.shape[0], x.shape[1], heads * d)
    return attn.to_out[1](attn.to_out[0](out))


@pytest.mark.parametrize("step", [0, 10, 25])
def test_graft_attention_equals_direct_formulation(step, one_torch_thread):
    unet = randomize_(tiny_unet(), seed=3, std=0.08)
    settings, tokens = GraftSettings(), (5, 6)
    seen = {}
    names = {m: n for n, m in unet.named_modules() if n in SD15_BY_DIFFUSERS}

    def hook(module, args, kwargs, output):
        seen[names[module]] = (
            args[0] if args else kwargs["hidden_states"],
            kwargs.get("encoder_hidden_states"),
            output,
        )

    handles = [m.register_forward_hook(hook, with_kwargs=True) for m in names]
    g = torch.Generator().manual_seed(0)
    x, ctx = torch.randn(6, 4, *LATENT, generator=g), torch.randn(6, 77, 32, generator=g)
    run = GraftPass(step, (False, True), GraftMasks(REF_MASK, TGT_MASK, LATENT), tokens, settings)
    with torch.no_grad(), grafted(unet):
        unet(x, torch.tensor(500), ctx, cross_attention_kwargs={"graft": run})
        worst = {}
        for name, (hidden, context, output) in seen.items():
            site = SD15_BY_DIFFUSERS[name]
            attn = unet.get_submodule(name)
            ref = direct_attention(attn, hidden, context, step, site.transformer_index, site.is_self, tokens, settings)
            worst[name] = (output - ref).abs().max().item()
    for h in handles:
        h.remove()
    assert len(worst) == 32
    assert max(worst.values()) <= 1e-5, max(worst.items(), key=lambda kv: kv[1])
    # the rules changed something: the target rows differ from plain attention at this step
    plain = {}
    with torch.no_grad():
        for name, (hidden, context, output) in seen.items():
            plain[name] = (unet.get_submodule(name)(hidden, encoder_hidden_states=context) - output).abs().max().item()
    assert max(plain.values()) > 1e-3


def test_grafted_restores_processors(one_torch_thread):
    unet = tiny_unet()
    before = {k: type(v) for k, v in unet.attn_processors.items()}
    with pytest.raises(RuntimeError), grafted(unet):
        raise RuntimeError("interrupted")
    assert {k: type(v) for k, v in unet.attn_processors.items()} == before


@pytest.fixture(scope="module")
def base():
    from graft_fixtures import tiny_base

    return tiny_base()


def _inputs(target):
    from graft_fixtures import reference_pair, textured

    from anodiff.graft.inputs import GraftInputs

    reference, ref_mask = reference_pair()
    normal = textured(2)
    return GraftInputs(reference, ref_mask > 0, normal, np.asarray(target) > 0.5)


def test_zero_target_mask_gives_the_normal_reconstruction(base, one_torch_thread):
    """Inversion + sampling round trip: with nothing to graft, the target is the normal image's DDIM inversion
    replayed; its latent equals the normal's encoding (within 1e-5: the LocalBlend copies the trajectory)."""
    from anodiff.graft.core import sample_graft
    from anodiff.graft.ddim import sd15_alphas
    from anodiff.graft.inversion import ddim_invert, ddim_schedulers
    from anodiff.graft.sampler import GraftSampler

    settings = GraftSettings(steps=10, optimise_steps=0)
    sampler = GraftSampler(base, settings, progress=False)
    inputs = _inputs(np.zeros((H, W)))
    forward, inverse = ddim_schedulers(sd15_alphas(base.scheduler.config), settings.steps)
    empty = base.encode_prompts([""])
    normal = sampler.encode(inputs.normal)
    plain = lambda x, t, c: sampler.predict(x, t, c, None)
    ref_traj = ddim_invert(plain, inverse, sampler.encode(inputs.reference), empty, progress=False)
    normal_traj = ddim_invert(plain, inverse, normal, empty, progress=False)
    masks = GraftMasks(torch.from_numpy(inputs.reference_mask).float(), torch.zeros(H, W), LATENT)
    context = base.encode_prompts(["a", "b", "c", "d", "e", "f"])
    with grafted(base.unet):
        out = sample_graft(sampler.predict, forward, ref_traj, normal_traj, masks, context, settings, (5,))
    assert (out - normal).abs().max().item() <= 1e-5
    # the same trajectory replayed by plain DDIM sampling (no graft, no blend) comes back close to x_0
    x = normal_traj[-1]
    for t in forward.timesteps:
        x = forward.step(plain(x, t, empty), t, x).prev_sample
    error = ((x - normal).norm() / normal.norm()).item()
    assert error < 0.1  # the tiny random UNet measures about 0.055 at 10 steps


def test_ddim_steps_match_diffusers(base):
    from diffusers import DDIMInverseScheduler, DDIMScheduler

    from anodiff.graft.ddim import DDIM, sd15_alphas

    config = base.scheduler.config
    ours, inv = DDIM(sd15_alphas(config), 50), DDIM(sd15_alphas(config), 50, inverse=True)
    theirs = DDIMScheduler.from_config(config, clip_sample=False, set_alpha_to_one=False)
    theirs_inv = DDIMInverseScheduler.from_config(config, clip_sample=False, set_alpha_to_one=False)
    theirs.set_timesteps(50)
    theirs_inv.set_timesteps(50)
    assert (
        ours.timesteps.tolist() == theirs.timesteps.tolist() and inv.timesteps.tolist() == theirs_inv.timesteps.tolist()
    )
    g = torch.Generator().manual_seed(0)
    x, eps = torch.randn(1, 4, 8, 8, generator=g), torch.randn(1, 4, 8, 8, generator=g)
    for a, b in ((ours, theirs), (inv, theirs_inv)):
        for t in (a.timesteps[0], a.timesteps[25], a.timesteps[-1]):
            torch.testing.assert_close(
                a.step(eps, t, x).prev_sample.float(), b.step(eps, t, x).prev_sample, atol=1e-5, rtol=1e-5
            )
    t = torch.tensor([10, 500, 990])
    torch.testing.assert_close(
        ours.add_noise(x.expand(3, -1, -1, -1), eps.expand(3, -1, -1, -1), t),
        theirs.add_noise(x.expand(3, -1, -1, -1), eps.expand(3, -1, -1, -1), t),
    )


def test_graft_changes_only_inside_the_target_and_caches_the_reference(base, one_torch_thread):
    from graft_fixtures import rect

    from anodiff.graft.embedding import EmbeddingBank
    from anodiff.graft.sampler import GraftSampler

    bank = EmbeddingBank()
    sampler = GraftSampler(base, GraftSettings(steps=6, optimise_steps=3), bank=bank, progress=False)
    target = rect(H, 14, 26, 4, 16)
    inputs = _inputs(target)
    first = sampler(inputs, "brick", "hole")
    assert bank.made == 1 and first.seconds["optimisation"] > 0
    second = sampler(inputs, "brick", "hole")
    assert bank.made == 1 and second.seconds["optimisation"] == 0.0
    np.testing.assert_array_equal(first.image, second.image)
    outside = ~np.asarray(first.target_mask)
    grown = __import__("anodiff.regions.stitch", fromlist=["grown_region"]).grown_region(target, 4) > 0
    np.testing.assert_array_equal(first.image[~grown], inputs.normal[~grown])
    assert np.abs(first.image - inputs.normal)[~outside].max() > 0.01
    assert not (first.mask & outside).any()


def test_tighten_rule():
    from anodiff.graft.inputs import tighten

    normal = np.full((8, 8, 3), 0.5, np.float32)
    image = normal.copy()
    image[2:4, 2:4, 1] += 0.2  # changed inside the target
    image[6, 6] += 0.2  # changed outside the target: never in the mask
    image[4, 4, 0] += 4 / 255  # inside, below the 8-level threshold
    target = np.zeros((8, 8), bool)
    target[1:6, 1:6] = True
    mask = tighten(image, normal, target)
    expected = np.zeros((8, 8), bool)
    expected[2:4, 2:4] = True
    np.testing.assert_array_equal(mask, expected)
    np.testing.assert_array_equal(tighten(image, normal, target, threshold=None), target)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"reference_mask": np.zeros((H, W))}, "reference mask is empty"),
        ({"reference_mask": np.ones((H, W + 8))}, "reference mask is 40x32"),
        ({"target_mask": np.zeros((H, W))}, "target mask is empty"),
        ({"target_mask": np.ones((H + 1, W))}, "target mask is 32x33"),
        ({"normal": np.zeros((H, W))}, "normal image must be an RGB image"),
    ],
)
def test_bad_inputs_name_the_input(change, message):
    from graft_fixtures import rect, reference_pair, textured

    from anodiff.graft.inputs import GraftInputError, GraftInputs

    reference, ref_mask = reference_pair()
    given = {
        "reference": reference,
        "reference_mask": ref_mask,
        "normal": textured(2),
        "target_mask": rect(H, 2, 10, 2, 10),
        **change,
    }
    with pytest.raises(ValueError, match=message) as info:
        GraftInputs.checked(**given)
    assert isinstance(info.value, GraftInputError) or "RGB" in message


def test_non_sd15_model_is_refused(base):
    from diffusers import UNet2DConditionModel

    from anodiff.graft.sampler import GraftSampler
    from anodiff.sd15.load import SD15, BaseModelError

    odd = UNet2DConditionModel(
        block_out_channels=(32, 64),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32,
        norm_num_groups=32,
        layers_per_block=1,
        sample_size=8,
    )
    with pytest.raises(BaseModelError, match="not a Stable Diffusion 1.5 UNet"):
        GraftSampler(SD15(odd, base.vae, base.text_encoder, base.tokenizer, base.scheduler, "odd.safetensors"))
    with pytest.raises(ValueError, match="needs an SD1.5 UNet"), grafted(odd):
        pass


def test_defect_token_positions(base):
    from anodiff.graft.sampler import defect_token_positions

    ids = base.tokenizer("a photo of a brick with a hole").input_ids
    (pos,) = defect_token_positions(base.tokenizer, "a photo of a brick with a hole", "hole")
    assert ids[pos] == base.tokenizer("hole", add_special_tokens=False).input_ids[0] and pos == len(ids) - 2
    assert len(defect_token_positions(base.tokenizer, "a photo of a brick with a deep crack", "deep crack")) == 2
