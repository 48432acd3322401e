"""How records name the models that made them."""

import json
from pathlib import Path

import pytest

from freemask.models import TINY_WORDS, model_reference, tiny_clip_tokenizer
from freemask.toyworld.render import VOCABULARY


def test_records_name_a_local_model_folder_without_its_path(tmp_path: Path) -> None:
    folder = tmp_path / "home" / "me" / "sd-finetuned"
    folder.mkdir(parents=True)
    assert model_reference(str(folder)) == "local:sd-finetuned"
    assert model_reference("stable-diffusion-v1-5/stable-diffusion-v1-5") == (
        "stable-diffusion-v1-5/stable-diffusion-v1-5"
    )
    assert model_reference("builtin:tiny-sd") == "builtin:tiny-sd"


@pytest.mark.parametrize("words", [tuple(TINY_WORDS), VOCABULARY], ids=["tiny-sd", "toy world"])
def test_every_word_of_a_tiny_vocabulary_is_one_token(words) -> None:
    """One word, one token: a class word split in pieces has no single attention column, and
    captions grow past the text encoder's positions ("orange" came out as "or an g e", its
    "a n" merge pre-empted by "and"'s)."""
    tokenizer = tiny_clip_tokenizer(words)
    split = {word: tokenizer.tokenize(word) for word in words if len(tokenizer.tokenize(word)) > 1}
    assert split == {}
    assert tokenizer.tokenize("zebra") == ["z", "e", "b", "r", "a</w>"]  # others: letters


def pickle_only_segmenter(folder: Path) -> Path:
    """A tiny Mask2Former folder whose weights are only ``pytorch_model.bin`` (a pickle)."""
    import torch

    from freemask.segment import build_tiny_mask2former, run_labels

    model = build_tiny_mask2former(run_labels(["cat", "dog"]))
    model.config.save_pretrained(folder)
    torch.save(model.state_dict(), folder / "pytorch_model.bin")
    return folder


@pytest.mark.parametrize("trainable", [True, False])
def test_a_pickle_only_checkpoint_is_refused_in_one_line(tmp_path: Path, trainable) -> None:
    from freemask.config import SegmentConfig
    from freemask.errors import FreemaskError
    from freemask.segment import load_segmenter

    folder = pickle_only_segmenter(tmp_path / "ckpt")
    settings = SegmentConfig(model_id=str(folder), image_size=64)
    with pytest.raises(FreemaskError) as refused:
        load_segmenter(settings, ["cat", "dog"], trainable=trainable)
    message = str(refused.value)
    assert "\n" not in message
    assert message.startswith(f"segment.model_id {str(folder)!r}: weights only as pickle")
    assert "(pytorch_model.bin)" in message and "convert the checkpoint to safetensors" in message


def test_a_pipeline_with_one_pickle_only_component_is_refused(tmp_path: Path) -> None:
    from freemask.config import GenerateConfig
    from freemask.errors import FreemaskError
    from freemask.models import SD_COMPONENTS, load_sd_pipeline

    folder = tmp_path / "sd"
    for name in SD_COMPONENTS:
        (folder / name).mkdir(parents=True)
    (folder / "model_index.json").write_text(json.dumps({name: [] for name in SD_COMPONENTS}))
    (folder / "vae" / "diffusion_pytorch_model.safetensors").write_bytes(b"x")
    (folder / "text_encoder" / "model.safetensors").write_bytes(b"x")
    (folder / "unet" / "diffusion_pytorch_model.bin").write_bytes(b"pickle")
    with pytest.raises(FreemaskError, match=r"\(unet/diffusion_pytorch_model\.bin\)"):
        load_sd_pipeline(GenerateConfig(model_id=str(folder), device="cpu"))


def test_every_loader_asks_from_pretrained_for_safetensors(tmp_path: Path, monkeypatch) -> None:
    import diffusers
    import sentence_transformers
    import transformers

    from freemask.config import GenerateConfig, SegmentConfig
    from freemask.errors import FreemaskError
    from freemask.models import load_sd_pipeline, load_text_encoder
    from freemask.segment import load_segmenter

    asked: dict[str, dict] = {}

    def refusing(name: str):
        def from_pretrained(source, **options):
            asked[name] = options
            raise OSError("no weights here")

        return from_pretrained

    monkeypatch.setattr(
        transformers.Mask2FormerForUniversalSegmentation, "from_pretrained", refusing("seg")
    )
    monkeypatch.setattr(diffusers.StableDiffusionPipeline, "from_pretrained", refusing("sd"))
    with pytest.raises(FreemaskError, match="cannot load"):
        load_segmenter(SegmentConfig(model_id="org/segmenter"), ["cat"], trainable=True)
    with pytest.raises(FreemaskError, match="cannot load"):
        load_sd_pipeline(GenerateConfig(model_id="org/sd", device="cpu"))

    def sentence_transformer(source, **options):
        asked["text"] = options
        raise OSError("no weights here")

    monkeypatch.setattr(sentence_transformers, "SentenceTransformer", sentence_transformer)
    with pytest.raises(FreemaskError, match="cannot load"):
        load_text_encoder("org/text")
    assert asked["seg"]["use_safetensors"] is True
    assert asked["sd"]["use_safetensors"] is True
    assert asked["text"]["model_kwargs"] == {"use_safetensors": True}


def test_pctnet_weights_that_need_unpickling_are_refused_in_one_line(tmp_path: Path) -> None:
    import datetime

    import torch

    from freemask.errors import FreemaskError
    from freemask.harmonize import load_pctnet

    path = tmp_path / "PCTNet_ViT.pth"
    torch.save({"made": datetime.date(2020, 1, 1)}, path)
    with pytest.raises(FreemaskError) as refused:
        load_pctnet(tmp_path)
    message = str(refused.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: cannot load weights safely, refused by torch.load")
