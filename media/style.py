"""Stylization conditions: a clip's optical flow and depth, each rendered as a 3-channel video.

VideoPoet's stylization task reconstructs a video from its motion and structure (optical flow and
depth, each rendered as an RGB video and tokenized by MAGVIT-v2) plus text; at generation time the
same conditions come from the user's clip and the text asks for a new look. The pipeline
(``style_conditions``) and ``videopoet generate --task stylize`` both call this module, so a model
sees at generation exactly the renders it trained on.

* :func:`optical_flow` - dense flow between consecutive frames (OpenCV's Farneback estimator, which
  stays accurate on the small frames of the tiny and small presets), ``float32 [T, H, W, 2]`` in
  pixels per frame; frame ``t`` carries the motion from ``t`` to ``t + 1`` and the last frame the
  motion into it, so the render has the clip's length.
* :func:`render_flow` - the usual colour wheel: direction as hue (motion towards +x is red, towards
  +y - down the image - is hue 90 degrees, ...), full saturation, magnitude as value, scaled by the
  clip's largest motion (at least ``min_scale`` pixels, so a still clip stays dark instead of
  amplifying noise), converted HSV -> RGB.
* :class:`DepthModel` - a user-supplied ONNX depth network run through onnxruntime. Its interface is
  checked when it loads: one input ``[N, 3, H, W]`` (float32 RGB in [0, 1]) and a first output
  ``[N, 1, H, W]`` or ``[N, H, W]``; fixed spatial sizes are honoured by resizing the frames to them
  and the depth back. Anything else is a :class:`StyleError` in one line.
* :func:`render_depth` - depth (or the inverse depth most networks predict) normalised over the
  whole clip (so brightness is comparable across its frames) to a grey 3-channel video.
"""

from __future__ import annotations

import os
import threading

import numpy as np

from videopoet.schemas.errors import VideoPoetError

__all__ = [
    "STYLE_KINDS",
    "DepthModel",
    "StyleError",
    "flow_video",
    "load_depth_model",
    "optical_flow",
    "render_depth",
    "render_flow",
    "style_videos",
]

# the condition kinds, in the order the stylize task lays them out
STYLE_KINDS = ("flow", "depth")


class StyleError(VideoPoetError, ValueError):
    """A style condition cannot be computed (missing OpenCV / onnxruntime, a depth model of the wrong shape)."""


def _cv2():
    try:
        import cv2
    except ImportError:
        raise StyleError("optical flow needs OpenCV: pip install 'videopoet[style]' (opencv-python-headless)") from None
    return cv2


def optical_flow(frames: np.ndarray) -> np.ndarray:
    """uint8 ``[T, H, W, 3]`` -> float32 ``[T, H, W, 2]`` (dx, dy) pixels per frame; zeros for T = 1."""
    cv2 = _cv2()
    frames = np.asarray(frames, np.uint8)
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise StyleError(f"optical flow needs uint8 [T, H, W, 3] frames, got shape {frames.shape}")
    t, h, w, _ = frames.shape
    out = np.zeros((t, h, w, 2), np.float32)
    if t < 2:
        return out
    grey = [cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in frames]
    for i in range(t - 1):
        out[i] = cv2.calcOpticalFlowFarneback(
            grey[i], grey[i + 1], None, pyr_scale=0.5, levels=3, winsize=9, iterations=3, poly_n=5,
            poly_sigma=1.1, flags=0,
        )  # fmt: skip
    out[t - 1] = out[t - 2]
    return out


def render_flow(flow: np.ndarray, min_scale: float = 1.0) -> np.ndarray:
    """float32 ``[T, H, W, 2]`` -> uint8 ``[T, H, W, 3]``: hue = direction, value = magnitude."""
    cv2 = _cv2()
    flow = np.asarray(flow, np.float32)
    dx, dy = flow[..., 0], flow[..., 1]
    magnitude = np.sqrt(dx * dx + dy * dy)
    angle = np.degrees(np.arctan2(dy, dx)) % 360.0  # image y points down: +y motion is 90 degrees
    scale = max(float(magnitude.max()) if magnitude.size else 0.0, float(min_scale))
    hsv = np.empty(flow.shape[:-1] + (3,), np.uint8)
    hsv[..., 0] = np.round(angle / 2.0).astype(np.int32) % 180  # OpenCV's 8-bit hue is degrees / 2
    hsv[..., 1] = 255
    hsv[..., 2] = np.clip(np.round(magnitude / scale * 255.0), 0, 255).astype(np.uint8)
    rgb = cv2.cvtColor(hsv.reshape(-1, hsv.shape[-2], 3), cv2.COLOR_HSV2RGB)  # one tall image
    return rgb.reshape(hsv.shape)


def flow_video(frames: np.ndarray) -> np.ndarray:
    """The flow condition of a clip: :func:`render_flow` of :func:`optical_flow`."""
    return render_flow(optical_flow(frames))


def render_depth(depth: np.ndarray) -> np.ndarray:
    """float ``[T, H, W]`` -> uint8 ``[T, H, W, 3]`` grey, min-max normalised over the clip."""
    depth = np.asarray(depth, np.float32)
    if not np.isfinite(depth).all():
        raise StyleError("the depth model returned non-finite values")
    lo, hi = float(depth.min()), float(depth.max())
    grey = np.zeros(depth.shape, np.uint8) if hi - lo < 1e-12 else np.round((depth - lo) / (hi - lo) * 255.0)
    grey = np.asarray(grey, np.uint8)
    return np.repeat(grey[..., None], 3, axis=-1)


class DepthModel:
    """An ONNX depth network (see the module docstring for the interface it must have)."""

    def __init__(self, path: str):
        try:
            import onnxruntime
        except ImportError:
            raise StyleError("a depth model needs onnxruntime: pip install 'videopoet[style]'") from None
        if not os.path.isfile(path):
            raise StyleError(f"depth model not found: {path}")
        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3
        try:
            self.session = onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        except Exception as e:  # noqa: BLE001 - onnxruntime raises its own exception types
            raise StyleError(f"depth model {path} does not load: {str(e).splitlines()[0][:200]}") from None
        self.path = path
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        if len(inputs) != 1:
            raise StyleError(f"depth model {path} must take one input [N, 3, H, W], it takes {len(inputs)}")
        shape = list(inputs[0].shape)
        if len(shape) != 4 or shape[1] != 3:
            raise StyleError(f"depth model {path}: the input must be [N, 3, H, W], it is {shape}")
        if "float" not in str(inputs[0].type) or "16" in str(inputs[0].type):
            raise StyleError(f"depth model {path}: the input must be float32, it is {inputs[0].type}")
        out = list(outputs[0].shape)
        if len(out) not in (3, 4) or (len(out) == 4 and out[1] != 1):
            raise StyleError(f"depth model {path}: the output must be [N, 1, H, W] or [N, H, W], it is {out}")
        if isinstance(shape[0], int) and shape[0] != 1:
            raise StyleError(f"depth model {path}: the batch dimension must be dynamic or 1, it is {shape[0]}")
        self.input_name = inputs[0].name
        self.per_frame = shape[0] == 1  # a network exported for one image at a time
        self.size = tuple(s if isinstance(s, int) else None for s in shape[2:])  # fixed (H, W) or None
        self._lock = threading.Lock()

    def predict(self, frames: np.ndarray) -> np.ndarray:
        """uint8 ``[T, H, W, 3]`` -> float32 depth ``[T, H, W]`` (the network's output at the frames' size)."""
        frames = np.asarray(frames, np.uint8)
        t, h, w, _ = frames.shape
        net_h, net_w = self.size[0] or h, self.size[1] or w
        x = frames
        if (net_h, net_w) != (h, w):
            cv2 = _cv2()
            x = np.stack([cv2.resize(f, (net_w, net_h), interpolation=cv2.INTER_AREA) for f in frames])
        batch = np.ascontiguousarray(x.transpose(0, 3, 1, 2), np.float32) / np.float32(255.0)
        with self._lock:
            try:
                if self.per_frame:
                    y = np.concatenate([self.session.run(None, {self.input_name: b[None]})[0] for b in batch])
                else:
                    y = self.session.run(None, {self.input_name: batch})[0]
            except Exception as e:  # noqa: BLE001
                raise StyleError(f"depth model {self.path} failed: {str(e).splitlines()[0][:200]}") from None
        y = np.asarray(y, np.float32)
        if y.ndim == 4:
            y = y[:, 0]
        if y.ndim != 3 or y.shape[0] != t:
            raise StyleError(f"depth model {self.path} returned shape {list(y.shape)} for {t} frames")
        if y.shape[1:] != (h, w):
            cv2 = _cv2()
            y = np.stack([cv2.resize(d, (w, h), interpolation=cv2.INTER_LINEAR) for d in y])
        return y


_DEPTH_CACHE: dict[str, DepthModel] = {}
_DEPTH_LOCK = threading.Lock()


def load_depth_model(path: str) -> DepthModel:
    """The depth model at ``path``, loaded (and checked) once per process."""
    key = os.path.abspath(path)
    with _DEPTH_LOCK:
        if key not in _DEPTH_CACHE:
            _DEPTH_CACHE[key] = DepthModel(path)
        return _DEPTH_CACHE[key]


def style_videos(frames: np.ndarray, kinds: tuple[str, ...], depth_model: str = "") -> dict[str, np.ndarray]:
    """kind -> uint8 ``[T, H, W, 3]`` condition video of the clip, for each of ``kinds`` (``STYLE_KINDS``)."""
    out = {}
    for kind in kinds:
        if kind == "flow":
            out[kind] = flow_video(frames)
        elif kind == "depth":
            if not depth_model:
                raise StyleError("the depth condition needs a depth model (depth_model: PATH.onnx)")
            out[kind] = render_depth(load_depth_model(depth_model).predict(frames))
        else:
            raise StyleError(f"unknown style condition {kind!r} (one of {', '.join(STYLE_KINDS)})")
    return out
