"""GPU throughput of the pipeline's models at full size, with random weights and no model hub.

Built from their published configurations: Stable Diffusion 1.5 (UNet, VAE, CLIP ViT-L/14 text
encoder) drawing at 512 px, and Mask2Former with a Swin-B backbone (ADE20K's 150 labels) at 512
px. Reported: images/s of plain sampling and of sampling with the project's attention capture
(``capture_attention`` + ``AttentionStore``, as the generate stage runs it) and their ratio;
Mask2Former training steps/s and inference images/s (the project's ``predict``); peak memory
(``torch.cuda.max_memory_allocated`` per part on a GPU, the process's peak RSS on the CPU); the
UNet's achieved TFLOP/s (FLOPs counted with ``FlopCounterMode``) against the GPU's assumed
dense bf16/fp16 peak.

On the CPU the same code runs scaled down (64 px, tiny widths, 2 steps, one thread) so that it
finishes in about a minute; the table says so. ``--device cuda`` on a machine without CUDA is
refused. Usage: ``python benchmarks/bench_gpu.py [--device auto|cpu|cuda] [--batch N]``.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from freemask.devices import Placement, resolve_device, resolve_precision
from freemask.generate import AttentionStore, capture_attention
from freemask.models import assemble_sd_pipeline, prepare_pipeline, tiny_clip_tokenizer
from freemask.segment import Segmenter, build_tiny_mask2former, place_segmenter, predict

# Dense bf16/fp16 tensor-core peaks (no sparsity) from the vendors' data sheets, TFLOP/s.
ASSUMED_PEAKS = {
    "H200": 989.0,  # H200 SXM
    "H100": 989.0,  # H100 SXM (the PCIe card: 756)
    "A100": 312.0,
    "L40S": 362.0,
    "L4": 121.0,
    "A10": 125.0,
    "T4": 65.0,
}
PROMPT = "a photo of a cat"


@dataclass(frozen=True)
class Size:
    """How large everything is: the full models on a GPU, a scaled-down copy on the CPU."""

    full: bool
    image: int
    steps: int
    batch: int
    repeats: int

    @property
    def label(self) -> str:
        return "full size" if self.full else "SCALED DOWN (CPU: tiny widths, not the real models)"


def build_sd(size: Size, device: torch.device, dtype: torch.dtype):
    """Stable Diffusion 1.5's UNet, VAE and CLIP ViT-L/14 text encoder, random weights."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    tokenizer = tiny_clip_tokenizer()  # offline BPE; token ids fall inside CLIP's 49408
    down = ("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",)
    up = ("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3
    if size.full:
        widths, vae_widths, text, heads, groups = (
            (320, 640, 1280, 1280),
            (128, 256, 512, 512),
            768,
            8,
            32,
        )
        layers, text_layers, text_heads = 2, 12, 12
    else:
        widths, vae_widths, text, heads, groups = (32, 32, 64, 64), (8, 16, 16, 16), 32, 4, 8
        layers, text_layers, text_heads = 1, 2, 4
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=size.image // 8,
        block_out_channels=widths,
        layers_per_block=layers,
        cross_attention_dim=text,
        attention_head_dim=heads,
        down_block_types=down,
        up_block_types=up,
        norm_num_groups=groups,
    )
    vae = AutoencoderKL(
        block_out_channels=vae_widths,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        layers_per_block=2 if size.full else 1,
        latent_channels=4,
        norm_num_groups=groups,
        sample_size=size.image,
    )
    encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=49408,
            hidden_size=text,
            intermediate_size=4 * text,
            num_hidden_layers=text_layers,
            num_attention_heads=text_heads,
            max_position_embeddings=77,
            hidden_act="quick_gelu",
        )
    )
    pipe = assemble_sd_pipeline(unet.eval(), vae.eval(), encoder.eval(), tokenizer)
    pipe = prepare_pipeline(pipe, "dpm++", device)
    return pipe if dtype == torch.float32 else pipe.to(dtype=dtype)


def build_mask2former(size: Size):
    """Mask2Former, Swin-B backbone, 150 labels (the ADE20K semantic model), random weights."""
    labels = [f"label-{index}" for index in range(150)]
    if not size.full:
        return build_tiny_mask2former(labels[:3], size="tiny")
    from transformers import Mask2FormerConfig, Mask2FormerForUniversalSegmentation, SwinConfig

    torch.manual_seed(0)
    backbone = SwinConfig(
        image_size=384,
        embed_dim=128,
        depths=[2, 2, 18, 2],
        num_heads=[4, 8, 16, 32],
        window_size=12,
        drop_path_rate=0.3,
        out_features=["stage1", "stage2", "stage3", "stage4"],
    )
    config = Mask2FormerConfig(
        backbone_config=backbone,
        num_labels=len(labels),
        id2label=dict(enumerate(labels)),
        label2id={label: index for index, label in enumerate(labels)},
    )
    return Mask2FormerForUniversalSegmentation(config)


def timed(device: torch.device, run: Callable[[], object], repeats: int) -> float:
    """Median seconds of ``run`` after one warm-up call (CUDA synchronised around each)."""
    run()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        run()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def peak_memory(device: torch.device) -> int:
    """Bytes: CUDA's peak allocation since the last reset, else the process's peak RSS."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def bench_sd(size: Size, device: torch.device, dtype: torch.dtype) -> dict[str, float]:
    reset_peak(device)
    pipe = build_sd(size, device, dtype)
    latent = size.image // 8
    store = AttentionStore((latent, latent), [16, 32], 32)
    tokens = [[5]] * size.batch

    def draw(capture: bool) -> None:
        kwargs = {"callback_on_step_end": store.on_step_end} if capture else {}
        if capture:
            store.begin(tokens, num_steps=size.steps)
        pipe(
            [PROMPT] * size.batch,
            height=size.image,
            width=size.image,
            num_inference_steps=size.steps,
            generator=torch.Generator(device).manual_seed(0),
            output_type="np",
            **kwargs,
        )

    with torch.inference_mode():
        plain = timed(device, lambda: draw(False), size.repeats)
        with capture_attention(pipe.unet, store):
            captured = timed(device, lambda: draw(True), size.repeats)
        # One UNet call of the guided batch, as the sampler makes it once per step.
        sample = torch.randn(2 * size.batch, 4, latent, latent, device=device, dtype=dtype)
        text = torch.randn(2 * size.batch, 77, pipe.unet.config.cross_attention_dim)
        text = text.to(device=device, dtype=dtype)
        step = torch.tensor(500, device=device)
        with FlopCounterMode(display=False) as counter:
            pipe.unet(sample, step, text)
        unet_s = timed(device, lambda: pipe.unet(sample, step, text), size.repeats)
    return {
        "plain_images_per_s": size.batch / plain,
        "capture_images_per_s": size.batch / captured,
        "unet_flops": float(counter.get_total_flops()),
        "unet_s": unet_s,
        "peak_bytes": peak_memory(device),
    }


def bench_mask2former(size: Size, placement: Placement) -> dict[str, float]:
    device = placement.device
    reset_peak(device)
    model = build_mask2former(size)
    labels = model.config.num_labels
    segmenter = place_segmenter(Segmenter(model, size.image, np.arange(labels)), placement)
    rng = np.random.default_rng(0)
    pixels = torch.randn(size.batch, 3, size.image, size.image)
    pixels = pixels.to(device, memory_format=placement.memory_format())
    masks, classes = [], []
    for _ in range(size.batch):
        label_map = torch.from_numpy(rng.integers(0, 3, (size.image, size.image)))
        masks.append(torch.stack([label_map == k for k in range(3)]).float().to(device))
        classes.append(torch.tensor(rng.choice(labels, 3, replace=False)).to(device))
    optimiser = torch.optim.AdamW(model.parameters(), lr=1e-4)
    scaler = placement.grad_scaler()

    def train_step() -> None:
        with placement.autocast():
            loss = model(pixel_values=pixels, mask_labels=masks, class_labels=classes).loss
        optimiser.zero_grad()
        scaler.scale(loss).backward()
        scaler.step(optimiser)
        scaler.update()

    model.train()
    train_s = timed(device, train_step, size.repeats)
    train_peak = peak_memory(device)
    reset_peak(device)
    images = [rng.integers(0, 255, (size.image, size.image, 3), dtype=np.uint8)] * size.batch
    predict_s = timed(device, lambda: predict(segmenter, images), size.repeats)
    return {
        "train_steps_per_s": 1.0 / train_s,
        "predict_images_per_s": size.batch / predict_s,
        "train_peak_bytes": train_peak,
        "predict_peak_bytes": peak_memory(device),
    }


def assumed_peak(device: torch.device) -> tuple[str, float | None]:
    """(the GPU's name, its assumed dense bf16/fp16 TFLOP/s, or None when not listed)."""
    if device.type != "cuda":
        return "CPU", None
    name = torch.cuda.get_device_name(device)
    for key, peak in ASSUMED_PEAKS.items():  # longer names first where they overlap (L40S, L4)
        if key in name.upper():
            return name, peak
    return name, None


def main(argv: list[str] | None = None) -> dict[str, object]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="auto", help="auto (CUDA if present), cpu or cuda")
    parser.add_argument(
        "--batch",
        type=int,
        default=None,
        help="images per call and per training step (GPU: 8; L4: 4)",
    )
    parser.add_argument("--steps", type=int, default=None, help="sampling steps (GPU: 25)")
    args = parser.parse_args(argv)
    device = resolve_device(args.device, "--device")
    full = device.type == "cuda"
    if not full:
        torch.set_num_threads(1)
    size = Size(
        full=full,
        image=512 if full else 64,
        steps=args.steps or (25 if full else 4),
        batch=args.batch or (8 if full else 1),
        repeats=3 if full else 5,
    )
    precision = resolve_precision("auto", device)
    placement = Placement(device, precision)
    sd_dtype = torch.float16 if full else torch.float32  # the generate stage's 'auto' dtype
    gpu, peak = assumed_peak(device)

    sd = bench_sd(size, device, sd_dtype)
    m2f = bench_mask2former(size, placement)
    tflops = sd["unet_flops"] / sd["unet_s"] / 1e12
    capture_ratio = sd["capture_images_per_s"] / sd["plain_images_per_s"]
    peak_text = f"{peak:.0f} TFLOP/s ({gpu}, dense bf16/fp16)" if peak else f"none known ({gpu})"
    print(
        f"{size.label}: {gpu}, {size.image} px, batch {size.batch}, {size.steps} steps, "
        f"SD {str(sd_dtype).removeprefix('torch.')}, Mask2Former precision "
        f"{str(precision).removeprefix('torch.') if precision else 'fp32'}, "
        f"torch threads {torch.get_num_threads()}"
    )
    rows = [
        ("SD sampling, plain", f"{sd['plain_images_per_s']:.3f} images/s"),
        ("SD sampling, attention capture", f"{sd['capture_images_per_s']:.3f} images/s"),
        ("capture / plain throughput", f"{capture_ratio:.3f}"),
        ("UNet GFLOP per guided call", f"{sd['unet_flops'] / 1e9:.1f}"),
        ("UNet achieved", f"{tflops:.3f} TFLOP/s"),
        ("assumed peak", peak_text),
        ("UNet share of peak", f"{tflops / peak:.1%}" if peak else "n/a"),
        ("SD peak memory", f"{sd['peak_bytes'] / 2**20:.0f} MiB"),
        ("Mask2Former train", f"{m2f['train_steps_per_s']:.3f} steps/s"),
        ("Mask2Former inference", f"{m2f['predict_images_per_s']:.3f} images/s"),
        ("Mask2Former train peak memory", f"{m2f['train_peak_bytes'] / 2**20:.0f} MiB"),
        ("Mask2Former inference peak memory", f"{m2f['predict_peak_bytes'] / 2**20:.0f} MiB"),
    ]
    memory_note = "torch.cuda.max_memory_allocated" if full else "process peak RSS (ru_maxrss)"
    width = max(len(name) for name, _ in rows)
    print(f"{'measure':<{width}}  value")
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    print(f"memory: {memory_note}")
    figures: dict[str, object] = {
        "device": gpu,
        "scaled_down": not full,
        "image_px": size.image,
        "batch": size.batch,
        "steps": size.steps,
        "sd_plain_images_per_s": round(sd["plain_images_per_s"], 4),
        "sd_capture_images_per_s": round(sd["capture_images_per_s"], 4),
        "capture_vs_plain_throughput_ratio": round(capture_ratio, 4),
        "unet_gflop_per_call": round(sd["unet_flops"] / 1e9, 2),
        "unet_achieved_tflops": round(tflops, 4),
        "assumed_peak_tflops": peak,
        "unet_fraction_of_assumed_peak": round(tflops / peak, 4) if peak else None,
        "sd_peak_memory_bytes": sd["peak_bytes"],
        "mask2former_train_steps_per_s": round(m2f["train_steps_per_s"], 4),
        "mask2former_predict_images_per_s": round(m2f["predict_images_per_s"], 4),
        "mask2former_train_peak_memory_bytes": m2f["train_peak_bytes"],
        "mask2former_predict_peak_memory_bytes": m2f["predict_peak_bytes"],
    }
    sys.stdout.write(json.dumps(figures) + "\n")
    return figures


if __name__ == "__main__":
    main()
