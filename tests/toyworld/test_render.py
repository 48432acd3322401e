"""The toy world's renderer: exact masks, occlusion, captions, determinism."""

import numpy as np
import pytest

from freemask.toyworld.render import (
    COLOURS,
    OBJECTS,
    SCENES,
    ToyObject,
    caption_for,
    random_scene,
    render,
    shape_mask,
)


def test_semantic_mask_is_the_union_of_instances_with_class_ids() -> None:
    scene = random_scene(seed=3, size=64, objects=(2, 2))
    union = np.zeros_like(scene.semantic, dtype=bool)
    for name, mask in scene.instances:
        assert (scene.semantic[mask] == OBJECTS.index(name) + 1).all()
        assert not (union & mask).any(), "instances overlap"
        union |= mask
    assert ((scene.semantic > 0) == union).all()


def test_later_objects_occlude_earlier_ones() -> None:
    front = ToyObject("box", "red", (0.5, 0.5), 0.4)
    back = ToyObject("ball", "blue", (0.45, 0.45), 0.5)
    scene = render("floor", [back, front], 64, seed=0)
    ball, box = dict(scene.instances)["ball"], dict(scene.instances)["box"]
    assert (box == shape_mask(front, 64)).all()
    assert (ball == shape_mask(back, 64) & ~shape_mask(front, 64)).all()
    red = np.asarray(COLOURS["red"])
    # The box's pixels carry its colour (shaded), not the ball's.
    ratio = scene.image[box].astype(float).mean(axis=0) / red
    assert ratio.std() < 0.1


def test_fully_hidden_objects_leave_no_instance() -> None:
    small = ToyObject("star", "white", (0.5, 0.5), 0.2)
    cover = ToyObject("box", "blue", (0.5, 0.5), 0.8)
    scene = render("field", [small, cover], 64, seed=0)
    assert [name for name, _ in scene.instances] == ["box"]


@pytest.mark.parametrize("name", OBJECTS)
def test_each_shape_fills_a_plausible_share_of_its_box(name: str) -> None:
    mask = shape_mask(ToyObject(name, "red", (0.5, 0.5), 0.5), 128)
    ys, xs = np.nonzero(mask)
    box_area = (np.ptp(ys) + 1) * (np.ptp(xs) + 1)
    assert 0.3 < mask.sum() / box_area <= 1.0
    assert abs(xs.mean() - 64) < 4  # centred


def test_same_seed_same_scene_and_captions_name_what_is_drawn() -> None:
    first, second = random_scene(11, 64, (1, 2)), random_scene(11, 64, (1, 2))
    assert (first.image == second.image).all() and first.caption == second.caption
    assert first.scene in SCENES and first.caption.endswith(f"on a {first.scene}")
    for name, _ in first.instances:
        assert name in first.caption
    assert caption_for("beach", []) == "a photo of a beach"
    assert (
        caption_for("sky", [ToyObject("star", "white", (0.5, 0.5), 0.3)])
        == "a photo of a white star on a sky"
    )
