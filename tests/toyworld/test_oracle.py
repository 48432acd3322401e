"""The truth proxy: resumable training, shipping and labels in the run's class ids."""

import json

import numpy as np
import pytest
import torch

from freemask.errors import FreemaskError
from freemask.records import Sample, read_manifest, write_manifest
from freemask.storage import LocalStorage, encode_image, read_image
from freemask.toyworld import oracle, oracle_redraws
from freemask.toyworld.oracle import (
    TruthProxy,
    load_truth_proxy,
    vae_roundtrip,
    write_proxy_truth,
)
from freemask.toyworld.probe_segmenter import (
    ProbeNet,
    ProbeSettings,
    checkpoint_step,
    load_pairs,
    train_probe,
)

TINY = ProbeSettings(steps=4, batch_size=2, width=4, depth=2)


def tiny_data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (6, 16, 16, 3), dtype=np.uint8)
    labels = np.zeros((6, 16, 16), np.uint8)
    labels[:, 4:12, 4:12] = rng.integers(1, 3, (6, 1, 1))
    return images, labels


def test_training_in_chunks_trains_the_model_one_run_trains(tmp_path) -> None:
    images, labels = tiny_data()
    whole = train_probe(images, labels, 3, 0, TINY)
    checkpoint = tmp_path / "checkpoint.pt"
    train_probe(images, labels, 3, 0, TINY, checkpoint=checkpoint, until_step=1)
    assert checkpoint_step(checkpoint) == 1
    train_probe(images, labels, 3, 0, TINY, checkpoint=checkpoint, until_step=3)
    chunked = train_probe(images, labels, 3, 0, TINY, checkpoint=checkpoint)
    assert checkpoint_step(checkpoint) == 4
    for name, value in whole.state_dict().items():
        assert torch.allclose(value.float(), chunked.state_dict()[name].float()), name
    once = train_probe(images, labels, 3, 0, ProbeSettings(steps=2, batch_size=2, width=4, depth=2))
    assert not torch.allclose(once.head.weight, whole.head.weight)  # training did move it


def test_the_proxy_labels_in_the_run_classes_and_drops_the_others(tmp_path) -> None:
    torch.manual_seed(0)
    model = ProbeNet(3, width=4, depth=2).eval()
    with torch.no_grad():  # a head that calls every pixel its label 2 ("ring")
        model.head.weight.zero_()
        model.head.bias.copy_(torch.tensor([0.0, 0.0, 5.0]))
    proxy = TruthProxy(model, ["background", "ball", "ring"])
    image = np.zeros((8, 8, 3), np.uint8)
    assert (proxy.label([image], ["box", "ring"])[0] == 2).all()
    assert (proxy.label([image], ["ball", "box"])[0] == 0).all()  # no ring in this run


def test_the_proxy_divides_out_the_class_weights_it_was_trained_with() -> None:
    torch.manual_seed(0)
    model = ProbeNet(3, width=4, depth=2).eval()
    with torch.no_grad():  # ring leads background by 1 in the logits
        model.head.weight.zero_()
        model.head.bias.copy_(torch.tensor([0.0, -5.0, 1.0]))
    image = np.zeros((8, 8, 3), np.uint8)
    weighted = TruthProxy(model, ["background", "ball", "ring"], [1.0, 1.0, float(np.e**2)])
    assert (weighted.label([image], ["ring"])[0] == 0).all()  # 1 - log(e^2) < 0
    unweighted = TruthProxy(model, ["background", "ball", "ring"])
    assert (unweighted.label([image], ["ring"])[0] == 1).all()


def test_a_shipped_proxy_loads_and_a_missing_one_says_how_to_train_it(tmp_path) -> None:
    from safetensors.torch import save_file

    model = ProbeNet(3, width=4, depth=2)
    save_file(model.state_dict(), tmp_path / "model.safetensors")
    (tmp_path / "labels.json").write_text(json.dumps(["background", "ball", "ring"]))
    (tmp_path / "config.json").write_text(json.dumps({"width": 4, "depth": 2}))
    loaded = load_truth_proxy(tmp_path)
    assert loaded.labels == ["background", "ball", "ring"]
    assert len(loaded.name) == 12 and loaded.name != TruthProxy(model, []).name  # its digest
    assert torch.equal(loaded.model.head.weight, model.head.weight)
    with pytest.raises(FreemaskError, match=r"python -m freemask\.toyworld\.oracle"):
        load_truth_proxy(tmp_path / "missing")


def test_the_vae_roundtrip_keeps_size_and_range() -> None:
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    vae = AutoencoderKL(block_out_channels=(8,), norm_num_groups=4, latent_channels=4).eval()
    images = np.random.default_rng(0).integers(0, 255, (3, 16, 16, 3), dtype=np.uint8)
    out = vae_roundtrip(vae, images, seed=0, batch=2)
    assert out.shape == images.shape and out.dtype == np.uint8
    assert np.array_equal(out, vae_roundtrip(vae, images, seed=0, batch=2))  # seeded


def test_the_shipped_oracle_seeds_stay_apart_from_the_benchmarks() -> None:
    assert oracle.DATA_SEED not in (0, 1000, 2000) and oracle.HELD_OUT_SEED != oracle.DATA_SEED


def test_proxy_truth_becomes_each_samples_truth_in_the_manifest(tmp_path) -> None:
    storage = LocalStorage(tmp_path)
    samples = []
    for index in range(3):
        path = f"images/s{index}.png"
        storage.write_bytes(path, encode_image(np.zeros((8, 8, 3), np.uint8), path))
        samples.append(Sample(id=f"s{index}", image=path, width=8, height=8))
    write_manifest(storage, samples)

    def proxy_calling_everything(label: int, name: str) -> TruthProxy:
        torch.manual_seed(0)
        model = ProbeNet(3, width=4, depth=2).eval()
        with torch.no_grad():
            model.head.weight.zero_()
            model.head.bias.copy_(torch.nn.functional.one_hot(torch.tensor(label), 3) * 5.0)
        return TruthProxy(model, ["background", "ball", "ring"], name=name)

    rings = proxy_calling_everything(2, "rings")
    write_proxy_truth(storage, rings, ["ring"])
    again = write_proxy_truth(storage, rings, ["ring"])  # idempotent
    assert [s.truth_mask for s in read_manifest(storage)] == [
        f"proxy_truth/rings/s{i}.png" for i in range(3)
    ]
    assert [s.id for s in again] == ["s0", "s1", "s2"]
    assert (read_image(storage, "proxy_truth/rings/s1.png") == 1).all()  # ring: run class 1
    # A retrained proxy's truth replaces its predecessor's instead of being skipped as done.
    write_proxy_truth(storage, proxy_calling_everything(0, "retrained"), ["ring"])
    truth = read_manifest(storage)[1].truth_mask
    assert truth == "proxy_truth/retrained/s1.png"
    assert (read_image(storage, truth) == 0).all()


def test_the_redraw_seeds_stay_apart_from_each_other_and_the_benchmarks() -> None:
    seeds = [
        oracle.DATA_SEED,
        oracle.HELD_OUT_SEED,
        oracle.REDRAW_SEED,
        oracle.HELD_OUT_REDRAW_SEED,
    ]
    assert len(set(seeds)) == 4
    # bench_method's scenes (0, 1000, 2000) and bench_quality's renders (100-399)
    assert not set(seeds) & {0, 1000, 2000, *range(100, 400)}


def test_redrawn_scenes_keep_the_render_truth_and_resume_from_their_cache(
    tmp_path, monkeypatch
) -> None:
    monkeypatch.setattr(oracle_redraws, "CHUNK", 2)
    monkeypatch.setattr(oracle_redraws, "BATCH", 2)
    images, labels = oracle_redraws.redrawn_scenes(tmp_path, 4, seed=9)
    storage = LocalStorage(tmp_path / "redraw-renders-9")
    renders, truth = load_pairs(storage, sorted(read_manifest(storage), key=lambda s: s.id))
    assert images.shape == renders.shape and images.dtype == np.uint8
    assert np.array_equal(labels, truth)  # the render's mask is the redraw's truth
    own = np.abs(images.astype(int) - renders).mean()
    other = np.abs(images.astype(int) - renders[::-1]).mean()
    assert 0 < own < other  # redrawn, yet each keeps its own render's layout

    def no_model():
        raise AssertionError("a cached redraw was drawn again")

    monkeypatch.setattr(oracle_redraws, "_image_to_image", no_model)
    again, _ = oracle_redraws.redrawn_scenes(tmp_path, 4, seed=9)
    assert np.array_equal(again, images)
