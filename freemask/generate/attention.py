"""Online capture of the UNet's attention while Stable Diffusion draws an image.

``AttentionStore`` keeps running sums, not per-step maps: for each captured resolution the
cross-attention probabilities of the class's tokens ([batch, tokens, H*W]) and, at one resolution,
the head-averaged self-attention ([batch, H*W, H*W]). Its size does not depend on the number of
steps. ``CaptureAttnProcessor`` computes its layer's output exactly as diffusers'
``AttnProcessor2_0`` does (same operations, same order, SDPA) and adds the probabilities of the
text-conditioned half of the classifier-free-guidance batch to the store.

The processor is installed only on the layers that can capture something (self-attention at the
self-attention resolution, cross-attention at the cross-attention resolutions); every other layer
keeps its own processor, so capture costs nothing where it is not wanted.

Resolutions are named as Stable Diffusion names them at 512 px (a 64-px latent): an attention map
with side ``s`` in a run whose latent side is ``L`` has resolution ``s * 64 / L``.
"""

from __future__ import annotations

import contextlib
import math
import re
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F

from freemask.errors import FreemaskError

REFERENCE_LATENT_SIDE = 64
_BLOCK = re.compile(r"^(down_blocks|up_blocks)\.(\d+)\.|^(mid_block)\.")


class AttentionStore:
    """Running sums of the attention captured during one pipeline call at a time.

    Built once per image size: ``latent_size`` is the latent grid (height, width), the
    resolutions say what to capture, ``window`` is the (start, end) fraction of the denoising
    steps to capture, 0 being the first step. ``begin`` starts a new pipeline call.
    """

    def __init__(
        self,
        latent_size: tuple[int, int],
        cross_resolutions: list[int],
        self_resolution: int | None,
        window: tuple[float, float] = (0.0, 1.0),
    ):
        self.latent_size = latent_size
        self.cross_resolutions = set(cross_resolutions)
        self.self_resolution = self_resolution
        self.window = window
        self.begin([[0]], num_steps=1)

    def begin(self, token_indices: list[list[int]], num_steps: int, guided: bool = True) -> None:
        """Forget earlier sums and prepare for one call of ``num_steps`` steps.

        ``token_indices[b]`` lists the prompt positions of sample b's class word (one or more
        tokens); ``guided`` says whether the UNet sees a classifier-free-guidance batch
        (unconditional half first, as diffusers stacks it).
        """
        if not token_indices or any(not indices for indices in token_indices):
            raise FreemaskError("every sample needs at least one class token to capture")
        self.batch = len(token_indices)
        width = max(len(indices) for indices in token_indices)
        # Pad each sample's token list to the widest by repeating its last token; padded
        # positions are masked out by token_valid when maps are read.
        self.token_index = torch.tensor(
            [indices + indices[-1:] * (width - len(indices)) for indices in token_indices]
        )
        self.token_valid = torch.tensor(
            [[k < len(indices) for k in range(width)] for indices in token_indices]
        )
        self.num_steps = num_steps
        self.guided = guided
        self.step = 0
        self.cross_sums: dict[int, torch.Tensor] = {}
        self.cross_counts: dict[int, int] = {}
        self.self_sums: dict[int, torch.Tensor] = {}
        self.self_counts: dict[int, int] = {}
        self.pending: dict[tuple, list[tuple[torch.Tensor, ...]]] = {}

    # -- called by the pipeline and the processor -------------------------------------------
    def on_step_end(self, pipe: Any, step: int, timestep: Any, callback_kwargs: dict) -> dict:
        """``callback_on_step_end`` hook: reduce the step's captured layers, advance the step."""
        self.flush()
        self.step = step + 1
        return callback_kwargs

    @property
    def active(self) -> bool:
        """True while the current step lies inside the capture window."""
        start, end = self.window
        return start <= self.step / self.num_steps < end

    def resolution_at(self, side: int) -> int:
        """The reference name of an attention map whose side is ``side`` (latent height)."""
        return round(side * REFERENCE_LATENT_SIDE / self.latent_size[0])

    def grid_of(self, tokens: int) -> tuple[int, int]:
        """(height, width) of an attention map over ``tokens`` spatial positions."""
        latent_h, latent_w = self.latent_size
        factor = math.sqrt(latent_h * latent_w / tokens)
        return round(latent_h / factor), round(latent_w / factor)

    def conditional(self, tensor: torch.Tensor) -> torch.Tensor:
        """The text-conditioned half of a guidance batch (diffusers puts it second)."""
        return tensor[self.batch :] if self.guided else tensor

    def defer(
        self,
        resolution: int,
        is_cross: bool,
        query: torch.Tensor,
        key: torch.Tensor,
        scale: float,
        mask: torch.Tensor | None,
    ) -> None:
        """Keep one layer's conditional query and key ([batch, heads, N, d]) until the step ends.

        Layers of the same resolution, kind and shape are then reduced together in one pass
        (``flush``): a few large operations instead of many small ones per layer.
        """
        group = (resolution, is_cross, scale, query.shape, key.shape, mask is None)
        self.pending.setdefault(group, []).append((query, key, mask))

    @torch.no_grad()
    def flush(self) -> None:
        """Add the deferred layers' head-averaged probabilities (float32) to the running sums."""
        for (resolution, is_cross, scale, *_), layers in self.pending.items():
            query = torch.stack([layer[0] for layer in layers])  # [layers, batch, heads, N, d]
            key = torch.stack([layer[1] for layer in layers])
            scores = torch.matmul(query * scale, key.transpose(-1, -2))
            if layers[0][2] is not None:
                scores = scores + torch.stack([layer[2] for layer in layers])
            probs = scores.float().softmax(dim=-1)
            count, heads = len(layers), probs.shape[2]
            if is_cross:
                index = self.token_index.to(probs.device)[None, :, None, None, :]
                probs = probs.gather(-1, index.expand(*probs.shape[:-1], -1))
                total = probs.sum(dim=(0, 2)).transpose(1, 2) / heads  # [batch, tokens, N]
                self._add(self.cross_sums, self.cross_counts, resolution, total, count)
            else:
                total = probs.sum(dim=(0, 2)) / heads  # [batch, N, N]
                self._add(self.self_sums, self.self_counts, resolution, total, count)
        self.pending.clear()

    @staticmethod
    def _add(
        sums: dict[int, torch.Tensor],
        counts: dict[int, int],
        resolution: int,
        total: torch.Tensor,
        count: int,
    ) -> None:
        if resolution in sums:
            sums[resolution] += total
        else:
            sums[resolution] = total
        counts[resolution] = counts.get(resolution, 0) + count

    # -- read by masks.py ----------------------------------------------------------------------
    def cross_maps(self) -> dict[int, torch.Tensor]:
        """Mean cross-attention per resolution, [batch, tokens, H, W].

        Raises FreemaskError if a configured resolution captured nothing.
        """
        self.flush()
        missing = sorted(self.cross_resolutions - set(self.cross_sums))
        if missing:
            raise FreemaskError(
                f"no cross-attention captured at resolution(s) {missing}; check "
                "generate.cross_attention_resolutions against the UNet and generate.timestep_window"
            )
        maps = {}
        for resolution, total in self.cross_sums.items():
            height, width = self.grid_of(total.shape[-1])
            mean = total / self.cross_counts[resolution]
            maps[resolution] = mean.reshape(self.batch, -1, height, width)
        return maps

    def self_map(self) -> torch.Tensor | None:
        """Mean self-attention [batch, H*W, H*W] (rows sum to 1), or None when not wanted."""
        if self.self_resolution is None:
            return None
        self.flush()
        if self.self_resolution not in self.self_sums:
            raise FreemaskError(
                f"no self-attention captured at resolution {self.self_resolution}; check "
                "generate.self_attention_resolution against the UNet and generate.timestep_window"
            )
        return self.self_sums[self.self_resolution] / self.self_counts[self.self_resolution]

    @property
    def nbytes(self) -> int:
        """Bytes held by the running sums."""
        tensors = [*self.cross_sums.values(), *self.self_sums.values()]
        return sum(tensor.numel() * tensor.element_size() for tensor in tensors)


class CaptureAttnProcessor:
    """Attention processor: the output of ``AttnProcessor2_0``, plus capture into a store.

    ``resolution`` is the layer's reference resolution; calls outside the store's timestep
    window go to ``original``, the processor the layer had before.
    """

    def __init__(self, store: AttentionStore, original: Any, resolution: int):
        self.store = store
        self.original = original
        self.resolution = resolution

    def __call__(
        self,
        attn: Any,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        temb: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> torch.Tensor:
        store = self.store
        if not store.active or hidden_states.ndim != 3:
            return self.original(
                attn, hidden_states, encoder_hidden_states, attention_mask, temb, **kwargs
            )

        # The operations of AttnProcessor2_0 for a plain (B, N, C) transformer attention.
        is_cross = encoder_hidden_states is not None
        context = encoder_hidden_states if is_cross else hidden_states
        batch_size, sequence_length, _ = context.shape
        if attention_mask is not None:
            attention_mask = attn.prepare_attention_mask(
                attention_mask, sequence_length, batch_size
            )
            attention_mask = attention_mask.view(
                batch_size, attn.heads, -1, attention_mask.shape[-1]
            )
        query = attn.to_q(hidden_states)
        if is_cross and attn.norm_cross:
            context = attn.norm_encoder_hidden_states(context)
        key = attn.to_k(context)
        value = attn.to_v(context)
        head_dim = key.shape[-1] // attn.heads
        query = query.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)
        key = key.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)
        value = value.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)
        output = F.scaled_dot_product_attention(
            query, key, value, attn_mask=attention_mask, dropout_p=0.0, is_causal=False
        )
        store.defer(
            self.resolution,
            is_cross,
            store.conditional(query),
            store.conditional(key),
            attn.scale,
            None if attention_mask is None else store.conditional(attention_mask),
        )

        output = output.transpose(1, 2).reshape(batch_size, -1, attn.heads * head_dim)
        output = attn.to_out[1](attn.to_out[0](output.to(query.dtype)))
        if attn.residual_connection:
            output = output + hidden_states
        return output / attn.rescale_output_factor


def _reproducible(attn: Any, processor: Any) -> bool:
    """True for layers whose output the capture processor reproduces exactly: plain
    transformer attention run by diffusers' default SDPA processor."""
    from diffusers.models.attention_processor import AttnProcessor2_0

    plain = all(
        getattr(attn, name, None) is None
        for name in ("spatial_norm", "group_norm", "norm_q", "norm_k")
    )
    return plain and type(processor) is AttnProcessor2_0


def layer_side(name: str, latent_side: int, depth: int) -> int | None:
    """The latent-grid side that a UNet2DConditionModel attention layer ``name`` works at.

    Down block i works at latent / 2^i, the middle block at latent / 2^(depth-1), up block j at
    latent / 2^(depth-1-j) (each downsampling rounds up, as the UNet's convolutions do).
    """
    match = _BLOCK.match(name)
    if match is None:
        return None
    if match.group(3):
        level = depth - 1
    elif match.group(1) == "down_blocks":
        level = int(match.group(2))
    else:
        level = depth - 1 - int(match.group(2))
    side = latent_side
    for _ in range(level):
        side = math.ceil(side / 2)
    return side


@contextlib.contextmanager
def capture_attention(unet: Any, store: AttentionStore) -> Iterator[AttentionStore]:
    """Install the capture processor on the layers the store wants; restore all on exit.

    Self-attention layers (``attn1``) capture at the store's self-attention resolution,
    cross-attention layers (``attn2``) at its cross-attention resolutions. Install once for
    many pipeline calls of the same size, calling ``store.begin`` before each.
    """
    originals = dict(unet.attn_processors)
    depth = len(unet.config.block_out_channels)
    modules = dict(unet.named_modules())
    installed = dict(originals)
    for name, original in originals.items():
        module_name = name.removesuffix(".processor")
        side = layer_side(module_name, store.latent_size[0], depth)
        if side is None or not _reproducible(modules[module_name], original):
            continue
        resolution = store.resolution_at(side)
        wanted = (
            resolution == store.self_resolution
            if module_name.endswith("attn1")
            else resolution in store.cross_resolutions
        )
        if wanted:
            installed[name] = CaptureAttnProcessor(store, original, resolution)
    unet.set_attn_processor(installed)
    try:
        yield store
    finally:
        unet.set_attn_processor(originals)
