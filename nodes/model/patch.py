"""Installs a ``DualAdapter`` on a cloned MODEL (with ``bcm_patch.py``, the only modules on ComfyUI internals).

Per-branch LoRA: a ``DIFFUSION_MODEL`` wrapper resolves the 128 q/k/v/out Linears from the UNet that is
actually running, overrides their ``forward`` (class forward + branch delta, so ComfyUI's weight casting and
streaming still run) and restores them in ``finally``. SAIM (folded): attn1/attn2 output patches. The dual
model's weights are counted in the MODEL's size and move with it (load/detach callbacks). Nothing here keeps a
reference to a ComfyUI module, and nothing is patched globally.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch

from ...anodiff.model.dual import PROJECTIONS, DualAdapter, DualAttention
from ...anodiff.model.lora import BranchLoRA
from ...anodiff.model.lora_fused import add_branch_lora, merge_pays, merged_branch_linear
from ...anodiff.model.pairs import row_branches
from ...anodiff.model.saim_fold import inference_adapter
from ...anodiff.model.sites import CROSS, SD15_BY_BLOCK, SD15_SITES, SELF, AttnSite
from ..sampling.stamps import outer_sample_wrapper
from .files import FoldedFile

KEY = "dualanodiff"
MODE = "anodiff_mode"  # transformer_options entry: "dual" (default), "write" or "read"
BANK = "anodiff_bank"  # transformer_options entry: {site.ldm: background tokens} during a BCM read pass


class SharedAcrossClones:
    """Patch objects are shared, not copied: ``clone()`` deep-copies model_options, and ours hold tensors."""

    def __deepcopy__(self, memo: dict) -> SharedAcrossClones:
        return self

    def to(
        self, device: torch.device
    ) -> SharedAcrossClones:  # ModelPatcher.model_patches_to: DualPatch moves on load/detach
        return self


class DualPatch(SharedAcrossClones):
    """A loaded dual model, held once, in the dtype the MODEL computes in, with every SAIM folded.

    ComfyUI sees it: ``apply_dual`` adds its bytes to the MODEL's size, and ON_LOAD/ON_DETACH callbacks move it
    with the model (to the load device on a full load; kept on the offload device under --lowvram/--novram,
    where each Linear call casts its own factors, as ComfyUI casts its own offloaded weights).
    """

    def __init__(
        self,
        adapter: DualAdapter,
        strengths: tuple[float, float],
        saim: bool = True,
        name: str = "",
        dtype: torch.dtype | None = None,
        device: torch.device | None = None,
        fold: bool = True,
        source: FoldedFile | None = None,
    ) -> None:
        """fold=False runs ``adapter`` itself, unfolded and uncopied (the adapter being trained). Its device is the
        trainer's (its optimiser state lives there), so ComfyUI's loads and unloads never move it. ``source``: the
        cached ``FoldedFile`` whose already folded ``adapter`` this is, held while this patch lives."""
        self.config, self.strengths, self.saim, self.name = adapter.config, tuple(strengths), saim, name
        self.source = source
        folding = fold and source is None
        self.adapter = inference_adapter(adapter, dtype=dtype, device=device) if folding else adapter
        self._movable = fold
        self._scales: dict[tuple[torch.device, torch.dtype, float], torch.Tensor] = {}

    def layer(self, site: AttnSite) -> DualAttention:
        return self.adapter.layer(site)

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.adapter.state_dict().values())

    def branch_scales(self, lora_scale: float, like: torch.Tensor) -> torch.Tensor:
        """(2,) strength x alpha/rank per branch on ``like``'s device and dtype, made once, not per Linear call."""
        key = (like.device, like.dtype, lora_scale)
        if key not in self._scales:
            self._scales[key] = (torch.tensor(self.strengths, dtype=torch.float32) * lora_scale).to(like)
        return self._scales[key]

    def on_load(self, patcher, device_to, lowvram_model_memory=0, force_patch_weights=False, full_load=False) -> None:
        if device_to is not None:
            partial = getattr(patcher.model, "model_lowvram", False) and not full_load
            self._move(patcher.offload_device if partial else device_to)

    def on_pre_run(self, patcher) -> None:
        """Where the UNet's weights are is settled when sampling starts. ON_LOAD alone is not enough: ComfyUI skips
        ``load`` for a clone whose base model is already loaded with the same weight patches (a new strength, a
        plain model sampled first), and the detach of the previous clone may have moved this shared patch away."""
        partial = getattr(patcher.model, "model_lowvram", False)
        self._move(patcher.offload_device if partial else patcher.load_device)

    def on_detach(self, patcher, unpatch_all: bool = True) -> None:
        self._move(patcher.offload_device)

    def on_inject(self, patcher) -> None:
        """ComfyUI ejects and re-injects a model around a partial unload (and a partial load): afterwards the
        dual model is where the UNet's rule puts it, so a partial unload frees it from the GPU with the UNet."""
        self.on_pre_run(patcher)

    def _move(self, device) -> None:
        if not self._movable:
            return
        first = next(self.adapter.parameters(), None)
        if device is not None and first is not None and first.device != torch.device(device):
            self.adapter.to(device)

    def diffusion_model_wrapper(self, executor: Callable, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        unet = executor.class_obj
        options = _transformer_options(args, kwargs)
        refuse_control(args[3] if len(args) > 3 else kwargs.get("control"))
        rows, chunks = x.shape[0], len(options.get("cond_or_uncond") or [0])
        try:
            ids, id_list = row_branches(rows, chunks, options.get(MODE) == "write", x.device)
        except ValueError as err:
            raise ValueError(
                f"this MODEL carries a Dual LoRA, which samples [global, anomaly] pairs ({err}); sample "
                "it with Dual Sampler, or put Pair Latent and Pair Conditioning before the KSampler"
            ) from err
        installed = []
        try:
            for site in SD15_SITES:
                layer = self.layer(site)
                for proj in PROJECTIONS:
                    module = unet.get_submodule(f"{site.ldm}.{'to_out.0' if proj == 'to_out' else proj}")
                    previous = module.__dict__.get("forward")
                    module.forward = _branch_forward(module, previous, self, layer.lora(proj), ids, id_list)
                    installed.append((module, previous))
            return executor(x, *args, **kwargs)
        finally:
            for module, previous in reversed(installed):
                if previous is None:
                    module.__dict__.pop("forward", None)
                else:
                    module.forward = previous


def refuse_control(control) -> None:
    """ControlNet / T2I-Adapter residuals are tiled over the batch by hint index, not by pair, so pair i would get
    hint i mod N on one branch and another hint on the other, and the grey anomaly canvas the photo's structure."""
    if control:
        raise ValueError(
            "a ControlNet or T2I-Adapter is applied to the conditioning of a Dual LoRA model; DualAnoDiff cannot "
            "pair its hints with the global/anomaly rows (the anomaly branch is a grey canvas). Remove Apply "
            "ControlNet from the dual graph, or use Region Latent to place the defect on a photo"
        )


def _transformer_options(args: tuple, kwargs: dict) -> dict:
    # UNetModel._forward(x, timesteps, context, y, control, transformer_options, **kwargs)
    if "transformer_options" in kwargs:
        return kwargs["transformer_options"]
    return args[4] if len(args) > 4 else {}


def _plain_linear(module, x: torch.Tensor) -> bool:
    """ComfyUI's Linear would run a plain ``F.linear`` on its own weights: no casting, streaming, weight patches."""
    weight = getattr(module, "weight", None)
    return (
        type(weight) is torch.nn.Parameter
        and weight.device == x.device
        and weight.dtype == x.dtype
        and not getattr(module, "comfy_cast_weights", False)
        and not getattr(module, "weight_function", None)
        and not getattr(module, "bias_function", None)
    )


def _branch_forward(
    module, previous, patch: DualPatch, lora: BranchLoRA, ids: torch.Tensor, id_list: list[int]
) -> Callable:
    base = previous if previous is not None else functools.partial(type(module).forward, module)

    def forward(x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        scales = patch.branch_scales(lora.scale, x)
        if (
            previous is None
            and not args
            and not kwargs
            and x.dim() == 3
            and not torch.is_grad_enabled()
            and merge_pays(x.shape[0] * x.shape[1], lora.in_features, lora.out_features)
            and _plain_linear(module, x)
        ):
            _run_every_op()
            return merged_branch_linear(x, module.weight, module.bias, id_list, lora.down, lora.up, scales)
        return add_branch_lora(base(x, *args, **kwargs), x, ids, lora.down, lora.up, scales)

    return forward


def _run_every_op() -> None:
    """What ComfyUI's own Linear.forward does first (interrupt checks), for the merged path that replaces it."""
    import comfy.ops

    hook = getattr(comfy.ops, "run_every_op", None)
    if hook is not None:
        hook()


class SAIMPatch(SharedAcrossClones):
    """attn1/attn2 output patch: SAIM on the attention output of the site this block belongs to."""

    def __init__(self, dual: DualPatch, kind: str) -> None:
        self.dual, self.kind = dual, kind

    def __call__(self, n: torch.Tensor, extra_options: dict) -> torch.Tensor:
        if not self.dual.saim or extra_options.get(MODE) == "write":
            return n
        site = SD15_BY_BLOCK[(tuple(extra_options["block"]), self.kind)]
        saim = self.dual.layer(site).saim
        return n if saim is None else saim(n, inplace=True)  # n: the attention's fresh output


def find_dual(model) -> DualPatch | None:
    """The ``DualPatch`` a Load Dual LoRA node put on this MODEL (or on one of its ancestors' clones)."""
    import comfy.patcher_extension

    for wrapper in model.get_wrappers(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, KEY):
        owner = getattr(wrapper, "__self__", None)
        if isinstance(owner, DualPatch):
            return owner
    return None


def compute_dtype(model) -> torch.dtype:
    """The dtype the MODEL's UNet computes in (its weight dtype, or the cast dtype of fp8/quantized weights)."""
    return getattr(model.model, "manual_cast_dtype", None) or model.model_dtype()


def apply_dual(model, dual: DualPatch):
    """Clone ``model`` and install the per-branch LoRA wrapper and the SAIM output patches.

    The clone's size includes the dual model, so ComfyUI's memory manager budgets for it. An OUTER_SAMPLE
    wrapper refuses a run whose conditioning or latent did not go through the pair nodes (``stamps.py``).
    """
    import comfy.patcher_extension

    if find_dual(model) is not None:
        raise ValueError("this MODEL already has a Dual LoRA; connect Load Dual LoRA to the plain checkpoint MODEL")
    m = model.clone()
    m.size = model.model_size() + dual.nbytes()
    m.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, KEY, dual.diffusion_model_wrapper)
    m.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.OUTER_SAMPLE, KEY, outer_sample_wrapper)
    m.add_callback_with_key(comfy.patcher_extension.CallbacksMP.ON_LOAD, KEY, dual.on_load)
    m.add_callback_with_key(comfy.patcher_extension.CallbacksMP.ON_DETACH, KEY, dual.on_detach)
    m.add_callback_with_key(comfy.patcher_extension.CallbacksMP.ON_PRE_RUN, KEY, dual.on_pre_run)
    m.set_injections(KEY, [comfy.patcher_extension.PatcherInjection(inject=dual.on_inject, eject=_no_op)])
    if dual.config.saim:
        m.set_model_attn1_output_patch(SAIMPatch(dual, SELF))
        m.set_model_attn2_output_patch(SAIMPatch(dual, CROSS))
    return m


def _no_op(patcher) -> None:
    """Ejecting needs nothing: the dual model is not part of the UNet's module tree."""
