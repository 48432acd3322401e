"""How records name the models that made them."""

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
