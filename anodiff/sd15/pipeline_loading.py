"""How a ``DualAnoDiffPipeline`` comes to be and where its parts live: the diffusers-style constructors
(``from_pretrained``, ``from_single_file``), ``from_sd15``, ``load_dual``, the trainer's ``live`` pipeline, and the
device moves (``to``, ``enable_model_cpu_offload``) that must carry the dual adapter along with the UNet.

SD1.5 itself is read by ``anodiff.sd15.load.load_sd15`` only (bundled configs, no download).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from ..model.dual import DualAdapter
from ..weights.load import load_dual as read_dual
from ..weights.schema import DualFile
from ..weights.text import add_text_lora, attached_lora, load_text_lora
from .load import SD15, BaseModelError, load_sd15
from .processor import DualAttnProcessor, DualUNet


class DualLoading:
    """The loading half of ``DualAnoDiffPipeline`` (a mixin before ``DiffusionPipeline``)."""

    @classmethod
    def from_sd15(cls, base: SD15, dual: DualFile | str | os.PathLike, device: str | torch.device | None = None):
        """The pipeline over an already loaded ``base`` (taken over in place) and one dual weight file."""
        pipe = cls._over(base).load_dual(dual)
        if device is not None:
            pipe.to(device)
        return pipe

    @classmethod
    def from_pretrained(
        cls,
        pretrained_model_name_or_path: str | os.PathLike,
        dual: DualFile | str | os.PathLike | None = None,
        torch_dtype: torch.dtype | None = None,
    ):
        """SD1.5 from a local diffusers folder (never downloaded), plus ``dual`` when given (else ``load_dual`` later).

        torch_dtype: the UNet's and text encoder's dtype (default fp32); the VAE stays fp32.
        """
        path = Path(pretrained_model_name_or_path)
        if path.is_file():
            raise BaseModelError(f"{path}: a single checkpoint file; use DualAnoDiffPipeline.from_single_file")
        return cls._from_base(load_sd15(path, dtype=torch_dtype or torch.float32), dual)

    @classmethod
    def from_single_file(
        cls,
        pretrained_model_link_or_path: str | os.PathLike,
        dual: DualFile | str | os.PathLike | None = None,
        torch_dtype: torch.dtype | None = None,
        config: str | os.PathLike | None = None,
    ):
        """SD1.5 from one ``.safetensors``/``.ckpt`` checkpoint read with SD1.5's bundled configs, plus ``dual``.

        config: a diffusers folder to take the component configs from instead (``anodiff.sd15.load.load_sd15``).
        """
        path = Path(pretrained_model_link_or_path)
        if path.is_dir():
            raise BaseModelError(f"{path}: a folder; use DualAnoDiffPipeline.from_pretrained for a diffusers folder")
        return cls._from_base(load_sd15(path, dtype=torch_dtype or torch.float32, config=config), dual)

    @classmethod
    def _over(cls, base: SD15):
        """A pipeline over the five components of ``base``, named after its source; no dual model yet."""
        pipe = cls(base.unet, base.vae, base.text_encoder, base.tokenizer, base.scheduler)
        pipe.register_to_config(_name_or_path=base.source)
        return pipe

    @classmethod
    def _from_base(cls, base: SD15, dual: DualFile | str | os.PathLike | None):
        return cls._over(base) if dual is None else cls.from_sd15(base, dual)

    def load_dual(self, dual: DualFile | str | os.PathLike):
        """Put one DualAnoDiff weight file (a path or a loaded ``DualFile``) on this pipeline's SD1.5, in place.

        The UNet gets the dual attention processors and the text encoder the file's LoRA; a pipeline takes one file
        (load the base again for another). Returns the pipeline."""
        dual = dual if isinstance(dual, DualFile) else read_dual(dual)
        base = self.base
        if self.model is not None or any(isinstance(p, DualAttnProcessor) for p in base.unet.attn_processors.values()):
            raise ValueError(
                f"base model {base.source} already serves a DualAnoDiff pipeline; load it again (load_sd15) for another"
            )
        dual.check_unet(*base.widths)
        if dual.has_text_lora:
            if attached_lora(base.text_encoder) is not None:
                raise ValueError(f"base model {base.source}: the text encoder already carries a LoRA; load it again")
            add_text_lora(base.text_encoder, dual.config.text_rank, dual.config.text_lora_alpha)
            load_text_lora(base.text_encoder, dual.text_tensors())
            base.text_encoder.requires_grad_(False).eval()
        adapter = dual.adapter(dtype=base.unet.dtype).to(self._execution_device)
        self.model = DualUNet(base.unet, adapter).eval().requires_grad_(False)
        self.prompts, self.bcm, self.source = dual.prompts, dual.config.bcm, dual.source
        return self

    @classmethod
    def live(cls, base: SD15, model: DualUNet, prompts: tuple[str, str], bcm: bool = False):
        """A pipeline over a model that is still training (the trainer's previews): no weight file, the base's
        text encoder already carries the live text LoRA, and the adapter may stay in fp32 beside a half UNet
        (the UNet then runs under autocast). Nothing of the base is moved; the VAE is fp32 as in every pipeline
        (the trainer's already is)."""
        pipe = cls._over(base)
        pipe.model, pipe.prompts, pipe.bcm, pipe.source = model, tuple(prompts), bcm, "the live model"
        return pipe

    @property
    def base(self) -> SD15:
        """The five SD1.5 components as an ``SD15`` (the same objects)."""
        return SD15(
            self.unet,
            self.vae,
            self.text_encoder,
            self.tokenizer,
            self.scheduler,
            self.name_or_path or "the base model",
        )

    @property
    def adapter(self) -> DualAdapter | None:
        """The dual model's weights (per-branch LoRA, SAIM, BCM); ``None`` before ``load_dual``."""
        return None if self.model is None else self.model.adapter

    def to(self, *args, **kwargs):
        """diffusers' ``to``, plus the adapter (not a pipeline component: it sits in the UNet's processors) following
        the UNet, and the VAE kept in fp32 when the pipeline goes to a half dtype."""
        super().to(*args, **kwargs)
        dtype = kwargs.get("dtype") or next((a for a in args if isinstance(a, torch.dtype)), None)
        if self.adapter is not None:
            self.adapter.to(device=self._execution_device, dtype=dtype)
        if self.vae.dtype in (torch.float16, torch.bfloat16):
            self.vae.to(dtype=torch.float32)
        return self

    def enable_model_cpu_offload(self, gpu_id: int | None = None, device: torch.device | str | None = None) -> None:
        """diffusers' model offload (text encoder -> UNet -> VAE, one on the accelerator at a time); the adapter is
        small and stays on the accelerator."""
        super().enable_model_cpu_offload(gpu_id=gpu_id, device=device)
        if self.adapter is not None:
            self.adapter.to(self._offload_device)
