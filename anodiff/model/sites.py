"""The 32 attention sites of the SD1.5 UNet and their names in diffusers and ComfyUI (ldm).

Order is execution order (input blocks, middle, output blocks), which is also ComfyUI's running
``transformer_index``. Each of the 16 transformer blocks has attn1 (self) and attn2 (cross).
"""

from __future__ import annotations

from dataclasses import dataclass

SELF, CROSS = "attn1", "attn2"


@dataclass(frozen=True)
class AttnSite:
    diffusers: str  # e.g. "down_blocks.0.attentions.0.transformer_blocks.0.attn1"
    ldm: str  # e.g. "input_blocks.1.1.transformer_blocks.0.attn1"
    block: tuple[str, int]  # ComfyUI patch key, e.g. ("input", 1); the middle block is ("middle", 0)
    transformer_index: int  # 0..15
    kind: str  # "attn1" or "attn2"
    level: int  # resolution level 0..3 (0 = full latent size); channels are block_out_channels[level]

    @property
    def is_self(self) -> bool:
        return self.kind == SELF


def _sd15_blocks() -> list[tuple[str, str, tuple[str, int], int]]:
    blocks = []
    for level in range(3):
        for j in range(2):
            blocks.append(
                (
                    f"down_blocks.{level}.attentions.{j}",
                    f"input_blocks.{3 * level + j + 1}.1",
                    ("input", 3 * level + j + 1),
                    level,
                )
            )
    blocks.append(("mid_block.attentions.0", "middle_block.1", ("middle", 0), 3))
    for up in range(1, 4):
        for j in range(3):
            blocks.append(
                (f"up_blocks.{up}.attentions.{j}", f"output_blocks.{3 * up + j}.1", ("output", 3 * up + j), 3 - up)
            )
    return blocks


def _sd15_sites() -> tuple[AttnSite, ...]:
    sites = []
    for index, (diff, ldm, block, level) in enumerate(_sd15_blocks()):
        for kind in (SELF, CROSS):
            tail = f"transformer_blocks.0.{kind}"
            sites.append(AttnSite(f"{diff}.{tail}", f"{ldm}.{tail}", block, index, kind, level))
    return tuple(sites)


SD15_SITES: tuple[AttnSite, ...] = _sd15_sites()
SD15_BY_DIFFUSERS: dict[str, AttnSite] = {s.diffusers: s for s in SD15_SITES}
SD15_CHANNELS = (320, 640, 1280, 1280)
SD15_CONTEXT_DIM = 768


def site_dims(
    site: AttnSite, channels: tuple[int, ...] = SD15_CHANNELS, context_dim: int = SD15_CONTEXT_DIM
) -> tuple[int, int]:
    """(hidden size, key/value input size) of a site for a UNet with these block channels."""
    dim = channels[min(site.level, len(channels) - 1)]
    return dim, (dim if site.is_self else context_dim)


SD15_BY_BLOCK: dict[tuple[tuple[str, int], str], AttnSite] = {(s.block, s.kind): s for s in SD15_SITES}
