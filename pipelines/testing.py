"""Hostile webdataset shards for the pipelines' guarantee tests (Beam and Ray use the same ones).

:func:`write_hostile_shards` writes a few small shards whose samples cover every bad-input case the
"nothing lost" guarantee names, and returns what each sample must become::

    {"shards": [paths], "expect": {(shard name, key): "record" | reject reason}, "visible": ...}

Cases: zero-byte / truncated / non-video mp4, a video with garbled frame data (the container opens,
decord fails on a frame), a too-short video, a huge-resolution video and image, a
missing / non-UTF-8 / 100 KB caption, a video without an audio track, a sample with its own .wav,
an image sample, a portrait video, path-traversal / absolute / symlink members, a key repeated
within a shard and across shards, and a truncated tar.
"""

from __future__ import annotations

import io
import os
import tarfile
import tempfile

import numpy as np

__all__ = ["done_markers", "faststart_mp4", "make_video", "write_hostile_shards", "write_tar"]

TAR_MTIME = 946684800


def done_markers(stats_dir: str) -> set[str]:
    """The committed per-shard done markers in a job's ``stats`` folder, as the store counts them
    (``WorkDir.done_shards``): a ``.tmp-*`` file is a marker write that a kill cut short."""
    if not os.path.isdir(stats_dir):
        return set()
    return {f for f in os.listdir(stats_dir) if f.endswith(".json") and not f.startswith(".tmp-")}


def make_video(
    frames: int = 41, width: int = 64, height: int = 64, fps: int = 8, audio: bool = True, seed: int = 0
) -> bytes:
    """A small moving-square H.264 (+ AAC) mp4."""
    from videopoet.media.encode import encode_mp4

    rng = np.random.default_rng(seed)
    bg = rng.integers(0, 255, 3)
    v = np.empty((frames, height, width, 3), np.uint8)
    v[:] = bg.astype(np.uint8)
    s = max(4, min(width, height) // 4)
    for t in range(frames):
        x = (t * 3) % max(1, width - s)
        v[t, height // 3 : height // 3 + s, x : x + s] = (255, 64, 32)
    a = None
    if audio:
        n = int(16000 * frames / fps)
        a = (0.3 * np.sin(2 * np.pi * 440 * np.arange(n) / 16000)).astype(np.float32)
    return encode_mp4(v, a, fps, 16000, preset="ultrafast", keyint=fps)


def huge_video(width: int = 4000, height: int = 2400, frames: int = 2) -> bytes:
    """A flat grey H.264 mp4 of a large frame size (cheap to encode)."""
    import av

    buf = io.BytesIO()
    with av.open(buf, mode="w", format="mp4") as out:
        vs = out.add_stream("libx264", rate=8)
        vs.width, vs.height, vs.pix_fmt = width, height, "yuv420p"
        vs.options = {"preset": "ultrafast", "threads": "1"}
        plane = np.full((height * 3 // 2, width), 128, np.uint8)
        for i in range(frames):
            vf = av.VideoFrame.from_ndarray(plane, format="yuv420p")
            vf.pts = i
            for pkt in vs.encode(vf):
                out.mux(pkt)
        for pkt in vs.encode():
            out.mux(pkt)
    return buf.getvalue()


def garble_frames(blob: bytes, start: float = 0.3, length: int = 500) -> bytes:
    """Overwrite bytes inside the mdat atom: the container opens, a frame fails to decode."""
    b = bytearray(blob)
    m = blob.find(b"mdat")
    lo = m + int((len(blob) - m) * start)
    for i in range(lo, min(lo + length, len(b))):
        b[i] = (b[i] * 7 + 13) % 256
    return bytes(b)


def faststart_mp4(blob: bytes) -> bytes:
    """Remux so the moov atom comes first (cutting the tail then leaves a playable header)."""
    import av

    with tempfile.TemporaryDirectory() as d:
        out = os.path.join(d, "fs.mp4")
        with (
            av.open(io.BytesIO(blob)) as src,
            av.open(out, "w", format="mp4", options={"movflags": "faststart"}) as dst,
        ):
            vs = src.streams.video[0]
            ov = dst.add_stream_from_template(vs)
            for pkt in src.demux(vs):
                if pkt.dts is None:
                    continue
                pkt.stream = ov
                dst.mux(pkt)
        with open(out, "rb") as f:
            return f.read()


def _jpeg(width: int, height: int, colour=(10, 200, 30)) -> bytes:
    from PIL import Image

    im = Image.new("RGB", (width, height), colour)
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=80)
    return buf.getvalue()


def _wav(seconds: float, sr: int = 22050) -> bytes:
    import soundfile as sf

    t = np.arange(int(seconds * sr)) / sr
    buf = io.BytesIO()
    sf.write(buf, (0.2 * np.sin(2 * np.pi * 330 * t)).astype(np.float32), sr, format="WAV")
    return buf.getvalue()


def write_tar(path: str, members: list) -> bytes:
    """members: (name, bytes) or (TarInfo, None) in order; returns the tar bytes (also written)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for name, data in members:
            if isinstance(name, tarfile.TarInfo):
                tar.addfile(name)
                continue
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(data), TAR_MTIME, 0o644
            tar.addfile(info, io.BytesIO(data))
    blob = buf.getvalue()
    with open(path, "wb") as f:
        f.write(blob)
    return blob


def write_hostile_shards(out_dir: str, huge: bool = True) -> dict:
    """Write ``hostile-0000{0,1,2}.tar`` into ``out_dir``; see the module docstring."""
    os.makedirs(out_dir, exist_ok=True)
    good = make_video(41, 64, 64, seed=1)
    noaudio = make_video(41, 80, 64, audio=False, seed=2)
    portrait = make_video(25, 64, 112, seed=3)
    short = make_video(8, 64, 64, seed=4)
    cut_frames = garble_frames(make_video(41, 64, 64, audio=False, seed=5))
    cap = b"a red square moves to the right"
    expect: dict[tuple[str, str], str] = {}

    def add(shard: str, key: str, outcome: str):
        expect[(shard, key)] = outcome

    s0 = "hostile-00000.tar"
    m0: list = []

    def sample(shard, members, key, outcome, store):
        store.extend(members)
        add(shard, key, outcome)

    sample(s0, [("a_good.mp4", good), ("a_good.txt", cap)], "a_good", "record", m0)
    sample(s0, [("b_empty.mp4", b""), ("b_empty.txt", cap)], "b_empty", "empty_file", m0)
    sample(
        s0,
        [("c_notvideo.mp4", b"hello, not a video" * 50), ("c_notvideo.txt", cap)],
        "c_notvideo",
        "undecodable_video",
        m0,
    )
    sample(s0, [("d_trunc.mp4", good[: len(good) // 3]), ("d_trunc.txt", cap)], "d_trunc", "undecodable_video", m0)
    sample(s0, [("e_cutframes.mp4", cut_frames), ("e_cutframes.txt", cap)], "e_cutframes", "corrupt_frame", m0)
    sample(s0, [("f_short.mp4", short), ("f_short.txt", cap)], "f_short", "too_short", m0)
    sample(s0, [("g_nocap.mp4", good)], "g_nocap", "record", m0)
    sample(
        s0, [("h_badutf8.mp4", good), ("h_badutf8.txt", b"\xff\xfe bad \xc3\x28")], "h_badutf8", "caption_not_utf8", m0
    )
    sample(s0, [("i_longcap.mp4", good), ("i_longcap.txt", b"word " * 20480)], "i_longcap", "caption_too_long", m0)
    sample(s0, [("j_noaudio.mp4", noaudio), ("j_noaudio.txt", cap)], "j_noaudio", "record", m0)
    sample(
        s0, [("k_ownwav.mp4", noaudio), ("k_ownwav.txt", cap), ("k_ownwav.wav", _wav(5.2))], "k_ownwav", "record", m0
    )
    sample(s0, [("l_image.jpg", _jpeg(96, 64)), ("l_image.txt", b"a green field")], "l_image", "record", m0)
    sample(
        s0,
        [("m_portrait.mp4", portrait), ("m_portrait.json", b'{"caption": "a tall clip"}')],
        "m_portrait",
        "record",
        m0,
    )
    if huge:
        sample(s0, [("n_hugeimg.jpg", _jpeg(4000, 2400)), ("n_hugeimg.txt", cap)], "n_hugeimg", "too_many_pixels", m0)
    # a refused member name is its own reject key (the name as found, printable)
    sample(s0, [("../../etc/o_evil.txt", b"x")], "../../etc/o_evil.txt", "unsafe_member_name", m0)
    sample(s0, [("/abs/p_evil.txt", b"x")], "/abs/p_evil.txt", "unsafe_member_name", m0)
    link = tarfile.TarInfo("q_link.mp4")
    link.type, link.linkname, link.mtime = tarfile.SYMTYPE, "/etc/passwd", TAR_MTIME
    sample(s0, [("q_link.txt", cap), (link, None)], "q_link", "non_regular_member", m0)
    sample(s0, [("r_meta.json", b"{}")], "r_meta", "no_media", m0)
    sample(s0, [("s_dup.txt", cap), ("s_dup.jpg", _jpeg(64, 64))], "s_dup", "record", m0)
    m0.extend([("t_between.txt", cap), ("t_between.jpg", _jpeg(64, 64))])
    add(s0, "t_between", "record")
    m0.extend([("s_dup.mp4", good)])  # the key again after another key: a reject in this shard
    expect[(s0, "s_dup#2")] = "duplicate_key"
    write_tar(os.path.join(out_dir, s0), m0)

    s1 = "hostile-00001.tar"
    m1: list = []
    sample(s1, [("a_good.mp4", make_video(41, 64, 64, seed=7)), ("a_good.txt", cap)], "a_good", "record", m1)
    if huge:
        big = huge_video(4000, 2400)
        sample(s1, [("u_hugevid.mp4", big), ("u_hugevid.txt", cap)], "u_hugevid", "too_many_pixels", m1)
    write_tar(os.path.join(out_dir, s1), m1)

    s2 = "hostile-00002.tar"
    m2: list = []
    sample(s2, [("v_ok.jpg", _jpeg(64, 64)), ("v_ok.txt", cap)], "v_ok", "record", m2)
    sample(s2, [("w_ok.jpg", _jpeg(64, 80)), ("w_ok.txt", cap)], "w_ok", "record", m2)
    m2.extend([("x_cut.mp4", good), ("x_cut.txt", cap)])
    full = write_tar(os.path.join(out_dir, s2), m2)
    # cut inside x_cut.mp4's data: v_ok and w_ok survive, x_cut is a truncated_tar reject
    off = full.find(good[:64])
    with open(os.path.join(out_dir, s2), "wb") as f:
        f.write(full[: off + len(good) // 2])
    add(s2, "x_cut", "truncated_tar")
    return {"shards": [os.path.join(out_dir, s) for s in (s0, s1, s2)], "expect": expect}
