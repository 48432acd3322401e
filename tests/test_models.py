"""How records name the models that made them."""

from pathlib import Path

from freemask.models import model_reference


def test_records_name_a_local_model_folder_without_its_path(tmp_path: Path) -> None:
    folder = tmp_path / "home" / "me" / "sd-finetuned"
    folder.mkdir(parents=True)
    assert model_reference(str(folder)) == "local:sd-finetuned"
    assert model_reference("stable-diffusion-v1-5/stable-diffusion-v1-5") == (
        "stable-diffusion-v1-5/stable-diffusion-v1-5"
    )
    assert model_reference("builtin:tiny-sd") == "builtin:tiny-sd"
