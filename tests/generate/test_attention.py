"""Attention capture on the tiny pipeline: exact images, per-sample maps, bounded state."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from freemask.errors import FreemaskError
from freemask.generate.attention import AttentionStore, CaptureAttnProcessor, capture_attention
from freemask.generate.attention import layer_side as side_of

PROMPTS = ["a photo of a cat", "a photo of a traffic light", "a photo of a dog"]
# Token positions (start token first) of the class words above in the tiny tokenizer.
TOKENS = [[5], [5, 6], [5]]


def draw(pipe, prompts, seeds, size=64, steps=5, store=None):
    kwargs = {
        "height": size,
        "width": size,
        "num_inference_steps": steps,
        "guidance_scale": 7.5,
        "generator": [torch.Generator().manual_seed(seed) for seed in seeds],
        "output_type": "np",
    }
    if store is None:
        return pipe(prompts, **kwargs).images
    store.begin(TOKENS[: len(prompts)], num_steps=steps)
    with capture_attention(pipe.unet, store):
        return pipe(prompts, callback_on_step_end=store.on_step_end, **kwargs).images


def make_store(size=64, cross=(16, 32), self_resolution=32, window=(0.0, 1.0)):
    latent = size // 8
    return AttentionStore((latent, latent), list(cross), self_resolution, window)


def test_capture_leaves_image_unchanged_with_batch_of_three(tiny_pipe) -> None:
    plain = draw(tiny_pipe, PROMPTS, [1, 2, 3])
    store = make_store()
    captured = draw(tiny_pipe, PROMPTS, [1, 2, 3], store=store)
    assert plain.shape == (3, 64, 64, 3)
    np.testing.assert_allclose(captured, plain, atol=1e-5, rtol=0)
    assert store.self_counts[32] > 0 and store.cross_counts[16] > 0


def test_capture_restores_the_original_processors(tiny_pipe) -> None:
    before = dict(tiny_pipe.unet.attn_processors)
    store = make_store()
    with capture_attention(tiny_pipe.unet, store):
        installed = tiny_pipe.unet.attn_processors
        assert any(isinstance(proc, CaptureAttnProcessor) for proc in installed.values())
        # Layers that capture nothing keep their own processor.
        assert any(not isinstance(proc, CaptureAttnProcessor) for proc in installed.values())
    after = tiny_pipe.unet.attn_processors
    assert all(after[name] is before[name] for name in before)


def test_batched_maps_match_each_sample_drawn_alone(tiny_pipe) -> None:
    batched = make_store()
    draw(tiny_pipe, PROMPTS, [1, 2, 3], store=batched)
    batched_maps = batched.cross_maps()
    for index in range(3):
        alone = make_store()
        alone.begin([TOKENS[index]], num_steps=5)
        with capture_attention(tiny_pipe.unet, alone):
            tiny_pipe(
                [PROMPTS[index]],
                height=64,
                width=64,
                num_inference_steps=5,
                generator=[torch.Generator().manual_seed(index + 1)],
                output_type="np",
                callback_on_step_end=alone.on_step_end,
            )
        for resolution, maps in alone.cross_maps().items():
            tokens = len(TOKENS[index])
            torch.testing.assert_close(
                batched_maps[resolution][index, :tokens], maps[0, :tokens], atol=1e-5, rtol=1e-4
            )
        torch.testing.assert_close(
            batched.self_map()[index], alone.self_map()[0], atol=1e-5, rtol=1e-4
        )


def test_multi_token_class_keeps_one_map_per_token(tiny_pipe) -> None:
    store = make_store()
    draw(tiny_pipe, PROMPTS, [1, 2, 3], store=store)
    maps = store.cross_maps()[32]
    assert maps.shape == (3, 2, 4, 4)  # widest class has 2 tokens; 64 px -> 4x4 at "32"
    assert store.token_valid.tolist() == [[True, False], [True, True], [True, False]]
    # The two tokens of "traffic light" attend differently.
    assert not torch.allclose(maps[1, 0], maps[1, 1])


def test_self_attention_rows_are_distributions(tiny_pipe) -> None:
    store = make_store()
    draw(tiny_pipe, PROMPTS[:1], [1], store=store)
    rows = store.self_map()[0].sum(dim=-1)
    torch.testing.assert_close(rows, torch.ones_like(rows))


def test_captured_state_does_not_grow_with_steps(tiny_pipe) -> None:
    sizes = []
    for steps in (3, 9):
        store = make_store()
        draw(tiny_pipe, PROMPTS[:1], [1], steps=steps, store=store)
        sizes.append(store.nbytes)
        assert store.cross_counts[16] == steps * 3  # 1 down + 2 up layers at "16" per step
    assert sizes[0] == sizes[1] > 0


def test_timestep_window_limits_the_steps_captured(tiny_pipe) -> None:
    store = make_store(window=(0.5, 1.0))
    draw(tiny_pipe, PROMPTS[:1], [1], steps=8, store=store)
    assert store.cross_counts[16] == 4 * 3


def test_missing_resolution_is_a_clear_error(tiny_pipe) -> None:
    store = make_store(cross=(16, 128))
    draw(tiny_pipe, PROMPTS[:1], [1], store=store)
    with pytest.raises(FreemaskError, match=r"resolution\(s\) \[128\]"):
        store.cross_maps()


def test_store_needs_a_token_per_sample() -> None:
    with pytest.raises(FreemaskError, match="at least one class token"):
        make_store().begin([[5], []], num_steps=4)


@pytest.mark.parametrize(
    ("name", "side"),
    [
        ("down_blocks.0.attentions.0.transformer_blocks.0.attn1", 64),
        ("down_blocks.2.attentions.0.transformer_blocks.0.attn2", 16),
        ("mid_block.attentions.0.transformer_blocks.0.attn1", 8),
        ("up_blocks.1.attentions.1.transformer_blocks.0.attn2", 16),
        ("up_blocks.3.attentions.0.transformer_blocks.0.attn2", 64),
        ("conv_in", None),
    ],
)
def test_layer_side_follows_stable_diffusion_layout(name: str, side: int | None) -> None:
    assert side_of(name, latent_side=64, depth=4) == side
