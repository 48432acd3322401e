"""Placement: the heuristic placer's priors and the FOPA network's layout, loading and boxes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from freemask.compose import Cutout, HeuristicPlacer, PlacementPrior
from freemask.compose.fopa import FopaNet, FopaPlacer, load_fopa, load_sopa_encoder
from freemask.compose.placement import occlusion
from freemask.errors import FreemaskError


def cutout(height: int = 20, width: int = 10) -> Cutout:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (height, width, 3), dtype=np.uint8)
    ones = np.ones((height, width))
    return Cutout(image, ones.astype(np.float32), ones.astype(np.uint8))


def textured_background(rows: int = 120, cols: int = 160) -> np.ndarray:
    """Flat grey on the left half, busy noise on the right half."""
    background = np.full((rows, cols, 3), 128, np.uint8)
    noise = np.random.default_rng(1).integers(0, 255, (rows, cols // 2, 3), dtype=np.uint8)
    background[:, cols // 2 :] = noise
    return background


def inside(box, rows, cols) -> bool:
    x, y, width, height = box
    return x >= 0 and y >= 0 and x + width <= cols and y + height <= rows


def test_heuristic_boxes_stay_inside_and_repeat_per_seed() -> None:
    background = textured_background()
    placer = HeuristicPlacer()
    for seed in range(20):
        prior = PlacementPrior(size=0.2 + seed / 25, support="ground")
        box = placer.place(background, cutout(), prior, [], np.random.default_rng(seed))
        again = placer.place(background, cutout(), prior, [], np.random.default_rng(seed))
        assert box == again and inside(box, 120, 160)


def test_support_prior_puts_ground_objects_low_and_flying_ones_high() -> None:
    background = np.full((200, 200, 3), 128, np.uint8)
    placer = HeuristicPlacer()
    lows, highs = [], []
    for seed in range(10):
        rng = np.random.default_rng(seed)
        _, y, _, h = placer.place(background, cutout(), PlacementPrior(0.2, "ground"), [], rng)
        lows.append((y + h) / 200)
        _, y, _, h = placer.place(background, cutout(), PlacementPrior(0.2, "air"), [], rng)
        highs.append((y + h / 2) / 200)
    assert np.mean(lows) > 0.7 and np.mean(highs) < 0.45


def test_heuristic_avoids_hiding_placed_objects() -> None:
    background = np.full((120, 160, 3), 128, np.uint8)
    placed = (60, 40, 24, 48)
    placer = HeuristicPlacer()
    for seed in range(10):
        rng = np.random.default_rng(seed)
        box = placer.place(background, cutout(48, 24), PlacementPrior(0.4, "stuff"), [placed], rng)
        assert occlusion(box, [placed]) < 0.2


def test_heuristic_prefers_flat_background_to_busy_texture() -> None:
    background = textured_background()
    placer = HeuristicPlacer()
    centres = []
    for seed in range(10):
        rng = np.random.default_rng(seed)
        x, _, width, _ = placer.place(background, cutout(), PlacementPrior(0.3, "stuff"), [], rng)
        centres.append(x + width / 2)
    assert np.mean(centres) < 80  # the flat half is the left one


def test_fopa_parameter_names_follow_the_published_checkpoint() -> None:
    shapes = {key: tuple(value.shape) for key, value in FopaNet().state_dict().items()}
    assert shapes["bg_encoder1.0.weight"] == (64, 4, 7, 7)
    assert shapes["bg_encoder2.1.0.conv1.weight"] == (64, 64, 3, 3)
    assert shapes["bg_encoder4.0.downsample.0.weight"] == (128, 64, 1, 1)
    assert shapes["fg_encoder1.0.weight"] == (64, 4, 7, 7)
    assert shapes["fg_encoder2.0.running_mean"] == (64,)
    assert shapes["fg_encoder32.1.bn2.weight"] == (512,)
    assert shapes["selfdc_16.gernerate_kernel.0.weight"] == (64, 64, 1, 1)
    assert shapes["selfdc_8.fuse.weight"] == (512, 64, 3, 3)
    assert shapes["upconv16.basicconv.0.weight"] == (256, 512, 3, 3)
    assert shapes["mask_conv.weight"] == (64, 1, 7, 7)
    assert shapes["classifier.weight"] == (2, 512, 1, 1)


def test_fopa_checkpoint_round_trips_through_safe_loading(tmp_path) -> None:
    torch.manual_seed(0)
    model = FopaNet().eval()
    torch.save(model.state_dict(), tmp_path / "best_weight.pth")
    loaded = load_fopa(tmp_path)
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value)


def test_fopa_loading_errors_are_specific(tmp_path) -> None:
    with pytest.raises(FreemaskError, match=r"best_weight\.pth: weights file not found"):
        load_fopa(tmp_path)
    torch.save({"conv1.weight": torch.zeros(1)}, tmp_path / "best_weight.pth")
    with pytest.raises(FreemaskError, match="not a FOPA checkpoint: missing"):
        load_fopa(tmp_path)


def test_sopa_resnet_loads_into_the_background_encoder(tmp_path) -> None:
    torch.manual_seed(1)
    source = FopaNet()
    renames = {
        "bg_encoder1.0.": "conv1.",
        "bg_encoder1.1.": "bn1.",
        "bg_encoder2.1.": "layer1.",
        "bg_encoder4.": "layer2.",
        "bg_encoder8.": "layer3.",
        "bg_encoder16.": "layer4.",
    }
    resnet = {}
    for key, value in source.state_dict().items():
        for new, old in renames.items():
            if key.startswith(new):
                resnet[old + key[len(new) :]] = value
    torch.save({"state_dict": resnet, "epoch": 10}, tmp_path / "SOPA.pth.tar")
    target = FopaNet()
    load_sopa_encoder(target, tmp_path / "SOPA.pth.tar")
    assert torch.equal(target.bg_encoder8[1].conv2.weight, source.bg_encoder8[1].conv2.weight)
    assert not torch.equal(target.fg_encoder8[1].conv2.weight, source.fg_encoder8[1].conv2.weight)


def test_fopa_placer_rules_out_the_border_and_boxes_fit() -> None:
    torch.manual_seed(0)
    placer = FopaPlacer(FopaNet().eval(), top_k=5, input_size=64, scales=(0.2, 0.4))
    background = textured_background(96, 128)
    scores, sizes = placer.heatmaps(background, cutout(30, 20))
    assert scores.shape == (2, 64, 64)
    half = int(sizes[1][1] / 96 * 64 / 2)
    assert (scores[1, :half] == 0).all() and (scores[1, 64 - half :] == 0).all()
    for seed in range(4):
        box = placer.place(
            background,
            cutout(30, 20),
            PlacementPrior(0.2, "ground"),
            [],
            np.random.default_rng(seed),
        )
        assert box is not None and inside(box, 96, 128)
        assert (box[2], box[3]) in sizes


def test_the_size_prior_sizes_the_object_not_its_halo() -> None:
    # A 10-px object in a 20-px cutout (a 5-px band all round): the prior says the object is
    # a quarter of the image high, so the box must be twice that.
    label = np.full((20, 20), 255, np.uint8)
    label[5:15, 5:15] = 1
    haloed = Cutout(np.zeros((20, 20, 3), np.uint8), np.ones((20, 20), np.float32), label)
    assert haloed.object_height_fraction == pytest.approx(0.5)
    prior = PlacementPrior(size=0.25, support="stuff", scale_jitter=(1.0, 1.0))
    box = HeuristicPlacer().place(
        np.full((200, 200, 3), 128, np.uint8), haloed, prior, [], np.random.default_rng(0)
    )
    assert box[3] == 100  # the object inside is 50 px: 0.25 of 200
