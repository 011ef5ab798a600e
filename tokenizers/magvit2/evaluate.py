"""MAGVIT-v2 evaluation: PSNR, SSIM, codebook usage / perplexity, bits per pixel, H.264 comparison.

* PSNR on uint8 RGB (peak 255), per clip then averaged; SSIM (Gaussian window sigma 1.5, on luma,
  per frame) as in Wang et al. 2004.
* Codebook usage: fraction of the 2^bits codes seen over all evaluated tokens, and perplexity
  ``exp(H)`` of the empirical code distribution.
* Bits per pixel of the tokens: ``bits * T'H'W' / (T H W)`` (raw code bits, no entropy coding).
* Rate-distortion vs H.264: each clip is encoded with libx264 (PyAV, yuv420p) at the CRF whose
  elementary-stream size (sum of packet sizes, no container) comes closest to the tokenizer's bits
  per pixel, and the PSNR of both is reported at their own bpp.
* Perceptual distance (with ``perceptual_weights``: the user's VGG-16 safetensors, see
  :mod:`.perceptual`): the LPIPS-style distance of every reconstructed frame to its original, averaged
  (lower is better; with the LPIPS heads it is LPIPS).
* Artifacts: a side-by-side grid PNG (original row / reconstruction row per clip, a few frames)
  and an mp4 of original | reconstruction.
"""

from __future__ import annotations

import io
import json
import os

import numpy as np

from videopoet.tokenizers.magvit2.lfq import codebook_stats


def psnr_of_mse(mse) -> float:
    """PSNR (peak 255) of a mean squared error, floored at 1e-10."""
    return float(10 * np.log10(255.0**2 / max(float(mse), 1e-10)))


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    return psnr_of_mse(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))


def _luma(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    return 0.299 * x[..., 0] + 0.587 * x[..., 1] + 0.114 * x[..., 2]


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Mean SSIM over frames of uint8 [..., H, W, 3] (luma, Gaussian window sigma 1.5)."""
    from scipy.ndimage import gaussian_filter

    ya = _luma(a).reshape(-1, *a.shape[-3:-1])
    yb = _luma(b).reshape(-1, *b.shape[-3:-1])
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    vals = []
    for x, y in zip(ya, yb, strict=True):
        f = lambda z: gaussian_filter(z, 1.5, truncate=3.5)  # noqa: E731
        mx, my = f(x), f(y)
        sxx, syy, sxy = f(x * x) - mx * mx, f(y * y) - my * my, f(x * y) - mx * my
        m = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2))
        vals.append(m.mean())
    return float(np.mean(vals))


def tokens_bpp(bits: int, latent_shape, video_shape) -> float:
    t, h, w = latent_shape
    T, H, W = video_shape
    return bits * t * h * w / (T * H * W)


# ------------------------------------------------------------------------------------- H.264
def h264_roundtrip(frames: np.ndarray, crf: int, fps: int = 8, preset: str = "medium") -> tuple[np.ndarray, int]:
    """uint8 [T,H,W,3] -> (decoded frames, elementary-stream bits) with libx264 at ``crf``."""
    import av

    t, h, w, _ = frames.shape
    buf = io.BytesIO()
    nbytes = 0
    with av.open(buf, mode="w", format="mp4") as out:
        vs = out.add_stream("libx264", rate=fps)
        vs.width, vs.height, vs.pix_fmt = w, h, "yuv420p"
        vs.options = {"crf": str(int(crf)), "preset": preset, "threads": "1"}
        for i in range(t):
            vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(frames[i]), format="rgb24").reformat(format="yuv420p")
            vf.pts = i
            for pkt in vs.encode(vf):
                nbytes += pkt.size
                out.mux(pkt)
        for pkt in vs.encode():
            nbytes += pkt.size
            out.mux(pkt)
    buf.seek(0)
    with av.open(buf) as c:
        dec = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    return np.stack(dec)[:t], nbytes * 8


def h264_at_bpp(frames: np.ndarray, target_bpp: float, fps: int = 8) -> dict:
    """Binary-search the CRF whose bits per pixel is closest to ``target_bpp``."""
    pixels = frames.shape[0] * frames.shape[1] * frames.shape[2]
    cache: dict[int, tuple[float, float]] = {}

    def at(crf: int):
        if crf not in cache:
            rec, bits = h264_roundtrip(frames, crf, fps)
            cache[crf] = (bits / pixels, psnr(frames, rec))
        return cache[crf]

    lo, hi = 0, 51
    while lo < hi:  # bpp decreases with crf: find the smallest crf with bpp <= target
        mid = (lo + hi) // 2
        if at(mid)[0] <= target_bpp:
            hi = mid
        else:
            lo = mid + 1
    cands = [c for c in (lo - 1, lo) if 0 <= c <= 51]
    best = min(cands, key=lambda c: abs(at(c)[0] - target_bpp))
    return {"crf": best, "bpp": at(best)[0], "psnr": at(best)[1]}


# ------------------------------------------------------------------------------------- artifacts
def save_grid(orig: np.ndarray, recon: np.ndarray, path: str, max_clips: int = 4, max_frames: int = 5) -> None:
    """PNG: for each clip a row of original frames above a row of reconstructed frames."""
    from PIL import Image

    n = min(max_clips, len(orig))
    t = orig.shape[1]
    idx = np.unique(np.linspace(0, t - 1, min(max_frames, t)).round().astype(int))
    rows = []
    for i in range(n):
        rows.append(np.concatenate(list(orig[i, idx]), axis=1))
        rows.append(np.concatenate(list(recon[i, idx]), axis=1))
    Image.fromarray(np.concatenate(rows, axis=0)).save(path)


def save_side_by_side_mp4(orig: np.ndarray, recon: np.ndarray, path: str, fps: int = 8, max_clips: int = 4) -> None:
    """mp4 of [original | reconstruction] with the clips one after another (H.264, CRF 10)."""
    import fsspec

    from videopoet.media.encode import encode_mp4

    pairs = zip(orig[:max_clips], recon[:max_clips], strict=True)
    frames = np.concatenate([np.concatenate([o, r], axis=2) for o, r in pairs])
    h, w = frames.shape[1:3]
    with fsspec.open(path, "wb") as f:
        f.write(encode_mp4(np.ascontiguousarray(frames[:, : h - h % 2, : w - w % 2]), None, fps, crf=10))


# ------------------------------------------------------------------------------------- driver
def breakdown(
    clips: np.ndarray, recon: np.ndarray, groups: list[str] | None = None, region: np.ndarray | None = None
) -> dict:
    """Where the error sits. ``psnr_per_frame``: mean over clips of each frame position's PSNR (a causal
    tokenizer codes frame 0 alone); with ``groups`` (a label per clip) the mean clip PSNR per label; with
    ``region`` (bool [N,T,H,W]) the PSNR of the pooled squared error inside and outside it."""
    se = np.square(clips.astype(np.float64) - recon.astype(np.float64)).mean(axis=-1)  # [N,T,H,W]
    frame_psnr = np.vectorize(psnr_of_mse)(se.mean(axis=(2, 3)))  # [N,T]
    out: dict = {"psnr_per_frame": [float(x) for x in frame_psnr.mean(axis=0)]}
    if groups is not None:
        clip_psnr = [psnr_of_mse(m) for m in se.mean(axis=(1, 2, 3))]  # = psnr(clip, recon) per clip
        out["psnr_by_group"] = {
            g: {
                "clips": int(sum(1 for x in groups if x == g)),
                "psnr": float(np.mean([p for p, x in zip(clip_psnr, groups, strict=True) if x == g])),
            }
            for g in sorted(set(groups))
        }
    if region is not None:
        region = np.asarray(region, bool)
        if region.shape != se.shape:
            raise ValueError(f"region mask {region.shape} does not match the clips {se.shape}")
        out["region"] = {
            "fraction": float(region.mean()),
            "psnr_inside": psnr_of_mse(se[region].mean()) if region.any() else None,
            "psnr_outside": psnr_of_mse(se[~region].mean()) if (~region).any() else None,
        }
    return out


def perceptual_distance(loaded: tuple, a: np.ndarray, b: np.ndarray, batch: int = 32) -> dict:
    """Mean LPIPS-style distance between the frames of uint8 ``a`` and ``b`` [..., H, W, 3].
    ``loaded``: what ``perceptual.load_weights`` returned (weights, sha256)."""
    import jax
    import jax.numpy as jnp

    from videopoet.tokenizers.magvit2 import perceptual

    weights, sha = loaded
    fa = a.reshape(-1, *a.shape[-3:])
    fb = b.reshape(-1, *b.shape[-3:])
    # the weights are an argument, not constants baked into the compiled program
    fn = jax.jit(
        lambda w, x, y: perceptual.distance(w, x.astype(jnp.float32) / 127.5 - 1.0, y.astype(jnp.float32) / 127.5 - 1.0)
    )
    d = np.concatenate(
        [np.asarray(fn(weights, fa[i : i + batch], fb[i : i + batch])) for i in range(0, len(fa), batch)]
    )
    return {
        "distance": float(d.mean()),
        "frames": int(len(d)),
        "heads": weights["lins"] is not None,
        "weights_sha256": sha,
    }


def evaluate(
    tokenizer,
    clips: np.ndarray,
    out_dir: str | None = None,
    h264: bool = True,
    h264_clips: int = 8,
    fps: int = 8,
    groups: list[str] | None = None,
    region: np.ndarray | None = None,
    perceptual_weights: str | None = None,
) -> dict:
    """Metrics of ``tokenizer`` on uint8 clips [N,T,H,W,3]; artifacts under ``out_dir`` if given.
    ``groups`` / ``region``: see :func:`breakdown` (the CLI passes background patterns and object
    neighbourhoods for the synthetic world); ``perceptual_weights``: adds :func:`perceptual_distance`."""
    clips = np.asarray(clips, np.uint8)
    loaded = None
    if perceptual_weights:  # a bad weights file fails before any work
        from videopoet.tokenizers.magvit2.perceptual import load_weights

        loaded = load_weights(perceptual_weights)
    codes = tokenizer.encode(clips)
    recon = tokenizer.decode(codes)
    cfg = tokenizer.config
    n, T, H, W, _ = clips.shape
    per_psnr = [psnr(clips[i], recon[i]) for i in range(n)]
    bpp = tokens_bpp(cfg.lfq_bits, codes.shape[1:], (T, H, W))
    res = {
        "clips": int(n),
        "shape": [int(T), int(H), int(W)],
        "latent_shape": [int(x) for x in codes.shape[1:]],
        "psnr": float(np.mean(per_psnr)),
        "psnr_median": float(np.median(per_psnr)),
        **breakdown(clips, recon, groups, region),
        "ssim": ssim(clips, recon),
        "bpp": bpp,
        "codebook_size": cfg.codebook_size,
        **{f"codebook_{k}": v for k, v in codebook_stats(codes, cfg.codebook_size).items()},
        "fingerprint": tokenizer.fingerprint,
    }
    if loaded is not None:
        res["perceptual"] = perceptual_distance(loaded, clips, recon)
    if h264 and T > 1:
        rows = [h264_at_bpp(clips[i], bpp, fps) for i in range(min(h264_clips, n))]
        res["h264"] = {
            "clips": len(rows),
            "bpp": float(np.mean([r["bpp"] for r in rows])),
            "psnr": float(np.mean([r["psnr"] for r in rows])),
            "crf": float(np.mean([r["crf"] for r in rows])),
            "tokenizer_psnr_same_clips": float(np.mean(per_psnr[: len(rows)])),
            "tokenizer_ssim_same_clips": ssim(clips[: len(rows)], recon[: len(rows)]),
            "target_bpp": bpp,  # H.264 may not get this low even at CRF 51 (headers, one I-frame)
        }
    if out_dir:
        os.makedirs(out_dir, exist_ok=True)
        save_grid(clips, recon, os.path.join(out_dir, "recon_grid.png"))
        if T > 1:
            save_side_by_side_mp4(clips, recon, os.path.join(out_dir, "recon.mp4"), fps)
        with open(os.path.join(out_dir, "metrics.json"), "w") as f:
            json.dump(res, f, indent=2, sort_keys=True)
    return res
