"""The shipped toy labeller: small, safetensors only, and a useful judge of a world it never saw."""

import json
from pathlib import Path

import pytest
import yaml

import freemask.toyworld.labeller as labeller_script
from freemask.config import RunConfig, load_config
from freemask.records import read_manifest
from freemask.segment.evaluate import evaluate
from freemask.segment.labeller import load_labeller
from freemask.storage import LocalStorage
from freemask.toyworld.dataset import write_toy_scenes
from freemask.toyworld.labeller import (
    SHIPPED,
    hardware,
    model_card,
    toy_labeller_path,
    trained_model_id,
)

REPO = Path(__file__).resolve().parents[2]
DEMO = str(REPO / "configs/demo.yaml")  # the script reads its config: pass it, from any cwd
# Measured on the shipped labeller: mIoU 0.908 on these 40 held-out toy-domain scenes, every
# class at least 0.86 (the labeller before it, trained on the shifted domain only, scored
# 0.713). A labeller that predicts background everywhere scores about 0.16 (background IoU
# ~0.97 over six labels). The judge's bar on rendered scenes: 0.85, every class 0.75 (on the
# composed pools it judges it scores below their labels: benchmarks/results/bench_judge_pools.txt).
LABELLER_MIOU_BAR = 0.85
LABELLER_CLASS_BAR = 0.75


def test_shipped_labeller_is_small_and_safetensors_only() -> None:
    folder = toy_labeller_path()
    files = sorted(path.name for path in folder.iterdir())
    assert files == ["MODEL_CARD.md", "config.json", "labels.json", "model.safetensors"]
    assert sum(path.stat().st_size for path in folder.iterdir()) < 20 * 2**20
    card = (folder / "MODEL_CARD.md").read_text()
    assert "--domain shifted" in card and "python -m freemask.toyworld.labeller" in card
    assert "--domain toy" in card and "mIoU 0.893" in card  # what it saw, what it scores


def test_the_demo_labeller_judges_the_toy_world_it_never_saw(tmp_path: Path) -> None:
    raw = yaml.safe_load((REPO / "configs/demo.yaml").read_text())
    config = RunConfig.model_validate({**raw, "workdir": str(tmp_path)})
    assert config.segment.labeller == "builtin:toy-labeller"
    scenes = str(tmp_path / "scenes")
    thesaurus = str(REPO / "configs/demo_thesaurus.yaml")
    write_toy_scenes(scenes, config.classes, 40, seed=4242, objects=(2, 3), thesaurus=thesaurus)
    labeller = load_labeller(config.segment, config.classes)
    storage = LocalStorage(scenes)
    scores = evaluate(labeller, read_manifest(storage), storage, config.classes)
    assert scores["miou"] >= LABELLER_MIOU_BAR, scores
    assert min(scores["per_class_iou"].values()) >= LABELLER_CLASS_BAR, scores


def fake_freemask(argv: list[str]) -> int:
    """Stands in for the CLI: ``toyworld scenes`` renders two scenes of its ``--domain``,
    ``train`` leaves a small trained folder at its ``--out``."""
    if "scenes" in argv:
        domain, seed = argv[argv.index("--domain") + 1], int(argv[argv.index("--seed") + 1])
        out = argv[argv.index("--out") + 1]
        write_toy_scenes(out, ["ball", "box"], 2, seed=seed, objects=(1, 1), domain=domain)
    if "train" in argv:
        model = Path(argv[argv.index("--out") + 1])
        model.mkdir(parents=True)
        (model / "config.json").write_text(json.dumps({"id2label": {"1": "ball", "0": "bg"}}))
        (model / "model.safetensors").write_bytes(b"new weights")
        (model / "labels.json").write_text('["bg", "ball"]')
        (model / "checkpoint-500").mkdir()  # training state that is not shipped
    return 0


def ship_old_labeller(out: Path) -> dict[str, bytes]:
    out.mkdir()
    for name in [*SHIPPED, "MODEL_CARD.md", "stale.txt"]:
        (out / name).write_bytes(f"old {name}".encode())
    return {path.name: path.read_bytes() for path in out.iterdir()}


def test_labeller_script_replaces_the_shipped_folder_whole(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(labeller_script, "freemask", fake_freemask)
    out = tmp_path / "shipped"
    ship_old_labeller(out)
    argv = ["--config", DEMO, "--out", str(out), "--work", str(tmp_path / "work"), "--scenes", "5"]
    assert labeller_script.main(argv) == 0
    assert sorted(path.name for path in tmp_path.iterdir()) == ["shipped", "work"]
    assert sorted(path.name for path in out.iterdir()) == sorted([*SHIPPED, "MODEL_CARD.md"])
    assert (out / "model.safetensors").read_bytes() == b"new weights"
    card = (out / "MODEL_CARD.md").read_text()
    assert "labels (bg, ball)" in card and "trained on 5 renders" in card
    assert f"`{load_config(DEMO).segment.model_id}`" in card
    assert f"python -m freemask.toyworld.labeller {' '.join(argv)}" in card
    assert "--domain shifted --seed 3`, then `freemask --set segment.train_steps=6000" in card


def test_a_failed_card_leaves_the_shipped_labeller_untouched(tmp_path: Path, monkeypatch) -> None:
    def fail(*args: object) -> str:
        raise OSError("killed while writing the card")

    monkeypatch.setattr(labeller_script, "freemask", fake_freemask)
    monkeypatch.setattr(labeller_script, "model_card", fail)
    out = tmp_path / "shipped"
    old = ship_old_labeller(out)
    with pytest.raises(OSError, match="killed while writing the card"):
        labeller_script.main(
            ["--config", DEMO, "--out", str(out), "--work", str(tmp_path / "work")]
        )
    assert {path.name: path.read_bytes() for path in out.iterdir()} == old


def write_config(tmp_path: Path, model_id: str | None) -> str:
    segment = f"segment:\n  model_id: {model_id}\n" if model_id else ""
    path = tmp_path / "labeller.yaml"
    path.write_text(f"classes: [ball, box]\n{segment}")
    return str(path)


def test_trained_model_id_is_the_configs_unless_overridden(tmp_path: Path) -> None:
    config = write_config(tmp_path, "builtin:tiny-mask2former")
    assert trained_model_id(config, []) == "builtin:tiny-mask2former"
    others = ["segment.image_size=128", "segment.labeller=x"]
    assert trained_model_id(config, others) == "builtin:tiny-mask2former"
    # As the CLI reads --set: an empty value sets nothing, YAML quotes are not part of the id.
    assert trained_model_id(config, ["segment.model_id="]) == "builtin:tiny-mask2former"
    quoted = ['segment.model_id="builtin:small-mask2former"']
    assert trained_model_id(config, quoted) == "builtin:small-mask2former"
    overrides = [
        "segment.model_id=builtin:small-mask2former",
        "segment.image_size=128",
        "segment.model_id=builtin:small-mask2former-conv",
    ]
    assert trained_model_id(config, overrides) == "builtin:small-mask2former-conv"
    assert trained_model_id(config, overrides[:2]) == "builtin:small-mask2former"
    default = write_config(tmp_path, None)
    assert (
        trained_model_id(default, [])
        == RunConfig.model_fields["segment"].default_factory().model_id
    )


def test_model_card_names_the_model_id_and_the_hardware() -> None:
    runs = [["toyworld", "scenes", "--count", "7"], ["train", "--in", "scenes"]]
    card = model_card("--scenes 7", runs, ["bg", "ball"], 7, 12.0, "builtin:some-model")
    assert "`builtin:some-model`" in card
    assert hardware() in card
    assert "labels (bg, ball)" in card and "trained on 7 renders" in card
    assert "`freemask toyworld scenes --count 7`, then `freemask train --in scenes`" in card
    other = model_card("--scenes 7", runs, ["bg", "ball"], 7, 12.0, "builtin:other-model")
    assert "`builtin:other-model`" in other and "builtin:some-model" not in other


def test_hardware_names_the_gpu_or_the_cpu_threads(monkeypatch) -> None:
    monkeypatch.setattr(labeller_script.torch.cuda, "is_available", lambda: False)
    assert hardware().startswith(f"{labeller_script.torch.get_num_threads()} CPU thread(s)")
    monkeypatch.setattr(labeller_script.torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(labeller_script.torch.cuda, "get_device_name", lambda index: "Test X1")
    assert hardware() == "one Test X1 GPU"


def test_labeller_script_passes_settings_to_training_and_names_the_model(
    tmp_path: Path, monkeypatch
) -> None:
    calls: list[list[str]] = []

    def recording_freemask(argv: list[str]) -> int:
        calls.append(list(argv))
        return fake_freemask(argv)

    monkeypatch.setattr(labeller_script, "freemask", recording_freemask)
    config = write_config(tmp_path, "builtin:tiny-mask2former")
    out = tmp_path / "shipped"
    argv = ["--config", config, "--out", str(out), "--work", str(tmp_path / "work")]
    argv += ["--set", "segment.model_id=builtin:small-mask2former-conv"]
    argv += ["--set", "segment.image_size=128"]
    assert labeller_script.main(argv) == 0
    render, train = calls
    assert "--set" not in render and render[render.index("--domain") + 1] == "shifted"
    position = train.index("train")
    settings = [train[i + 1] for i in range(position) if train[i] == "--set"]
    assert settings[-2:] == [
        "segment.model_id=builtin:small-mask2former-conv",
        "segment.image_size=128",
    ]
    assert train[position:] == [
        "train",
        "-c",
        config,
        "--in",
        str(tmp_path / "work/scenes"),
        "--out",
        str(tmp_path / "work/model"),
    ]
    card = (out / "MODEL_CARD.md").read_text()
    assert "`builtin:small-mask2former-conv`" in card and "builtin:tiny-mask2former" not in card
    assert (
        "--set segment.model_id=builtin:small-mask2former-conv --set segment.image_size=128 train"
        in card
    )


def test_several_domains_are_rendered_apart_and_trained_on_together(
    tmp_path: Path, monkeypatch
) -> None:
    calls: list[list[str]] = []

    def recording_freemask(argv: list[str]) -> int:
        calls.append(list(argv))
        return fake_freemask(argv)

    monkeypatch.setattr(labeller_script, "freemask", recording_freemask)
    work = tmp_path / "work"
    argv = ["--config", DEMO, "--out", str(tmp_path / "shipped"), "--work", str(work)]
    assert labeller_script.main([*argv, "--domains", "toy,shifted", "--seed", "3"]) == 0
    *renders, _train = calls
    domains = [(r[r.index("--domain") + 1], r[r.index("--seed") + 1]) for r in renders]
    assert domains == [("toy", "3"), ("shifted", "7003")]  # each domain its own layouts
    union = read_manifest(LocalStorage(work / "scenes"))
    parts = [read_manifest(LocalStorage(work / f"scenes-{d}")) for d in ("toy", "shifted")]
    assert [s.id for s in union] == [s.id for part in parts for s in part]
    for sample in union:  # the union's files are the renders' own bytes
        for name in (sample.image, sample.semantic_mask):
            domain = "toy" if any(sample.id == s.id for s in parts[0]) else "shifted"
            assert (work / "scenes" / name).read_bytes() == (
                work / f"scenes-{domain}" / name
            ).read_bytes()
    card = (tmp_path / "shipped" / "MODEL_CARD.md").read_text()
    assert "--domain toy" in card and "--domain shifted" in card and "on their union" in card
