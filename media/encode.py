"""Media encoding: H.264 + AAC in mp4 (PyAV), JPEG, PNG and GIF (Pillow), 16-bit PCM WAV (soundfile).

mp4 and JPEG are deterministic (the synthetic corpus and the pipelines' tests compare bytes).

Byte-for-byte reproducibility needs a few precautions:

* RGB -> YUV 4:2:0 (BT.601, limited range) is done here in numpy, not by swscale, whose SIMD
  paths may differ between CPUs.
* x264 runs with one thread and *without the lowres lookahead* (no B-frames, scene-cut detection,
  macroblock tree or weighted P prediction). With the lookahead on, libx264 was seen to give
  different bytes for the same input within one process at widths that are not a multiple of 32
  (80, 160): its lowres planes read memory it never wrote.
* The muxer and both encoders get ``+bitexact``, so no library version strings or times go into
  the container.

The AAC track starts aligned with the video (the encoder delay is trimmed by the mp4 edit list);
decoded, it is up to one AAC frame (1024 samples) longer than the rendered audio (encoder padding).
"""

from __future__ import annotations

import fractions
import io

import numpy as np

__all__ = ["encode_gif", "encode_jpeg", "encode_mp4", "encode_png", "encode_wav", "rgb_to_yuv420p"]

X264_PARAMS = "bframes=0:scenecut=0:mbtree=0:weightp=0:rc-lookahead=0"


def rgb_to_yuv420p(frame: np.ndarray) -> np.ndarray:
    """uint8 [H,W,3] RGB -> uint8 [H*3/2, W] planar YUV 4:2:0 (BT.601 limited range)."""
    f = frame.astype(np.float32)
    r, g, b = f[..., 0], f[..., 1], f[..., 2]
    y = 16.0 + 0.256788 * r + 0.504129 * g + 0.097906 * b
    u = 128.0 - 0.148223 * r - 0.290993 * g + 0.439216 * b
    v = 128.0 + 0.439216 * r - 0.367788 * g - 0.071427 * b
    h, w = y.shape
    u = u.reshape(h // 2, 2, w // 2, 2).mean(axis=(1, 3))
    v = v.reshape(h // 2, 2, w // 2, 2).mean(axis=(1, 3))
    out = np.empty((h * 3 // 2, w), np.uint8)
    out[:h] = np.clip(np.rint(y), 0, 255)
    out[h : h + h // 4] = np.clip(np.rint(u), 0, 255).reshape(h // 4, w)
    out[h + h // 4 :] = np.clip(np.rint(v), 0, 255).reshape(h // 4, w)
    return out


def encode_mp4(
    frames: np.ndarray,
    audio: np.ndarray | None,
    fps: int,
    audio_rate: int = 16000,
    *,
    crf: int = 20,
    preset: str = "veryfast",
    keyint: int = 12,
    audio_bitrate: int = 48000,
) -> bytes:
    """uint8 [T,H,W,3] frames (+ float32 [N] mono audio) -> mp4 bytes (H.264 yuv420p, AAC)."""
    import av

    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8 [T,H,W,3], got {frames.dtype} {frames.shape}")
    t, h, w, _ = frames.shape
    if h % 2 or w % 2:
        raise ValueError(f"frame size must be even for yuv420p, got {w}x{h}")
    buf = io.BytesIO()
    with av.open(buf, mode="w", format="mp4", container_options={"fflags": "+bitexact"}) as out:
        vs = out.add_stream("libx264", rate=int(fps))
        vs.width, vs.height, vs.pix_fmt = w, h, "yuv420p"
        vs.codec_context.thread_count = 1
        vs.options = {
            "preset": preset,
            "crf": str(int(crf)),
            "threads": "1",
            "g": str(int(keyint)),
            "flags": "+bitexact",
            "x264-params": X264_PARAMS,
        }
        ast = None
        if audio is not None:
            ast = out.add_stream("aac", rate=int(audio_rate))
            ast.layout = "mono"
            ast.bit_rate = int(audio_bitrate)
            ast.options = {"flags": "+bitexact"}
        for i in range(t):
            vf = av.VideoFrame.from_ndarray(rgb_to_yuv420p(frames[i]), format="yuv420p")
            vf.pts = i
            for pkt in vs.encode(vf):
                out.mux(pkt)
        for pkt in vs.encode():
            out.mux(pkt)
        if ast is not None:
            samples = np.ascontiguousarray(np.asarray(audio, dtype=np.float32).reshape(-1))
            step = 1024  # the AAC frame size
            tb = fractions.Fraction(1, int(audio_rate))
            for s in range(0, len(samples), step):
                chunk = samples[s : s + step]
                af = av.AudioFrame.from_ndarray(chunk[None, :], format="fltp", layout="mono")
                af.sample_rate, af.pts, af.time_base = int(audio_rate), s, tb
                for pkt in ast.encode(af):
                    out.mux(pkt)
            for pkt in ast.encode():
                out.mux(pkt)
    return buf.getvalue()


def encode_jpeg(frame: np.ndarray, quality: int = 90) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(frame, dtype=np.uint8)).save(
        buf, format="JPEG", quality=int(quality), optimize=False, subsampling=2
    )
    return buf.getvalue()


def encode_png(frame: np.ndarray) -> bytes:
    """uint8 [H,W,3] -> PNG bytes."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(frame, dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def encode_gif(frames: np.ndarray, fps: float) -> bytes:
    """uint8 [T,H,W,3] -> an endlessly looping GIF at ``fps``."""
    from PIL import Image

    images = [Image.fromarray(np.ascontiguousarray(f, dtype=np.uint8)) for f in frames]
    buf = io.BytesIO()
    images[0].save(buf, format="GIF", save_all=True, append_images=images[1:], duration=int(round(1000 / fps)), loop=0)
    return buf.getvalue()


def encode_wav(audio: np.ndarray, sample_rate: int) -> bytes:
    """float32 [N] mono in [-1, 1] (clipped) -> 16-bit PCM WAV bytes."""
    import soundfile

    buf = io.BytesIO()
    soundfile.write(
        buf, np.clip(np.asarray(audio, np.float32).reshape(-1), -1, 1), int(sample_rate), format="WAV", subtype="PCM_16"
    )
    return buf.getvalue()
