"""Photo avatars: preparation (built-in and uploaded portraits, refusals), lip sync measured with the landmark model
on the output frames, identity kept outside the mouth, idle life (blinks, sway), rewind. (The idle loop's rules:
tests/test_idle_loop.py.)"""

from __future__ import annotations

import asyncio
import io

import cv2
import numpy as np
import pytest
from PIL import Image
from skimage import data
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from infinitetalk_live.speech_drives import SpokenText, frame_drives, speak
from services.common.media import MAX_PORTRAIT_BYTES
from services.video.backend import Drive, IdleLoop
from services.video.drawn import DrawnBackend
from services.video.idle import loop_frames
from services.video.photo.backend import BUILTINS, PhotoBackend, portrait_name
from services.video.photo.landmarks import FaceLandmarker
from services.video.photo.lipsync import measure, mouth_openings
from services.video.photo.portrait import PortraitError
from services.video.photo.renderer import PhotoRenderer
from services.video.pixels import i420_to_rgb

SENTENCE = "Hello there! I am a photo that talks. Watch my lips move with every word."
FPS = 25
LOOP = IdleLoop(loop_frames(FPS, 12))


def encoded(rgb: np.ndarray, kind: str = "JPEG") -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, kind)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def backend() -> PhotoBackend:
    return PhotoBackend()


@pytest.fixture(scope="module")
def spoken() -> SpokenText:
    return asyncio.run(speak(SENTENCE))


def render(renderer: PhotoRenderer, drives: list[Drive]) -> tuple[list[np.ndarray], np.ndarray]:
    """Output frames (RGB, decoded from the I420 the service sends) and the renderer's mouth track."""
    frames, track = [], []
    for drive in drives:
        frames.append(i420_to_rgb(renderer.render_frame(drive), renderer.width, renderer.height))
        track.append(renderer.tracker.state.shape.open)
    return frames, np.array(track)


def speech_span(spoken: SpokenText) -> tuple[float, float]:
    loud = np.nonzero(spoken.envelope() > 0.01)[0]
    return loud[0] / FPS, (loud[-1] + 1) / FPS


# ---------------------------------------------------------------------------------------------------------------------
# Preparation


@pytest.mark.parametrize("name", sorted(BUILTINS))
def test_each_builtin_photo_avatar_prepares_and_renders(backend: PhotoBackend, name: str) -> None:
    renderer = backend.open(name, 512, 512, FPS, 24000, LOOP)
    rig = renderer.warp.rig
    assert rig.face.presence > 0.9
    assert 60 < rig.mouth.half_width * 2 < 200, "the mouth is found at a plausible size"
    assert rig.mouth.chin_v > rig.mouth.half_width * 0.5 > 0 > rig.mouth.nose_v, "nose above, chin below the mouth"
    assert len(renderer.render_frame(Drive(0))) == 512 * 512 * 3 // 2
    assert name in [a.name for a in backend.avatars()]


@pytest.mark.parametrize("name", ["drawn", "drawn-kai"])
def test_drawn_fallback_avatars_still_render(name: str) -> None:
    renderer = DrawnBackend().open(name, 256, 256, FPS, 24000, LOOP)
    assert len(renderer.render_frame(Drive(0))) == 256 * 256 * 3 // 2


@pytest.mark.parametrize("kind", ["JPEG", "PNG", "WEBP"])
def test_uploaded_portrait_prepares_once_by_content_hash(backend: PhotoBackend, kind: str) -> None:
    # A different crop of the public-domain photo, mirrored: another "person" as far as the cache is concerned.
    photo = np.ascontiguousarray(data.astronaut()[20:500, ::-1])
    upload = encoded(photo, kind)
    info = backend.prepare_portrait(upload)
    assert info.name == portrait_name(upload) and info.name.startswith("portrait-") and info.backend == "photo"
    assert info.name not in [a.name for a in backend.avatars()], "uploads are private: never listed"
    assert backend.prepared(info.name) is backend.prepared(info.name)
    assert backend.prepare_portrait(upload) == info
    renderer = backend.open(info.name, 320, 240, FPS, 24000, LOOP)
    frame = i420_to_rgb(renderer.render_frame(Drive(0)), 320, 240)
    face = FaceLandmarker.shared().find(frame)
    assert face is not None, "the framed output shows the uploaded face"


def test_unknown_avatar_is_a_key_error(backend: PhotoBackend) -> None:
    with pytest.raises(KeyError):
        backend.open("portrait-" + "0" * 32, 256, 256, FPS, 24000, LOOP)


def _gradient() -> np.ndarray:
    ramp = np.linspace(0, 255, 512, dtype=np.float32)
    return np.stack([np.tile(ramp, (512, 1)), np.tile(ramp[:, None], (1, 512)), np.full((512, 512), 90.0)], -1).astype(
        np.uint8
    )


def _huge_png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8660, 5774), (200, 120, 90)).save(buffer, "PNG")  # 50 megapixels, a small file
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("make", "reason", "words"),
    [
        (lambda: b"this is not an image at all" * 10, "not_an_image", "not a JPEG, PNG or WebP"),
        (lambda: encoded(_gradient(), "PNG"), "no_face", "no face found"),
        (lambda: _huge_png(), "too_many_pixels", "(50.0 megapixels); the limit is 25 megapixels"),
        (lambda: b"\xff" * (MAX_PORTRAIT_BYTES + 1), "too_large", "the limit is 8 MiB"),
        (lambda: encoded(cv2.resize(data.astronaut(), (160, 160)), "PNG"), "face_too_small", "at least 80"),
        (lambda: encoded(data.astronaut(), "GIF"), "unsupported_format", "GIF"),
        (lambda: encoded(data.astronaut(), "JPEG")[:3000], "not_an_image", "damaged"),
    ],
)
def test_bad_portraits_are_refused_with_a_reason(backend: PhotoBackend, make, reason: str, words: str) -> None:
    with pytest.raises(PortraitError) as refused:
        backend.prepare_portrait(make())
    assert refused.value.reason == reason
    assert words in refused.value.message
    # The backend is unharmed: the built-in still renders.
    assert len(backend.open("astronaut", 256, 256, FPS, 24000, LOOP).render_frame(Drive(0))) == 256 * 256 * 3 // 2


# ---------------------------------------------------------------------------------------------------------------------
# Lip sync, measured by the landmark model on the output frames


@pytest.fixture(scope="module")
def closed_lips(backend: PhotoBackend) -> str:
    """An upload whose lips are closed (the built-in smiles with its teeth showing): our own rest frame, so the
    mouth's interior must be painted rather than taken from the photo."""
    renderer = backend.open("astronaut", 720, 720, FPS, 24000, LOOP)
    rest = renderer.warp.render(renderer.pose(0, renderer.tracker.step(0, None, ())))
    name = backend.prepare_portrait(encoded(rest, "PNG")).name
    mouth = backend.warp(name, 512, 512).rig.mouth
    assert float(mouth.lower_inner(0.0) - mouth.seam(0.0)) == 0.0, "read as closed lips"
    return name


@pytest.mark.parametrize(
    ("avatar", "with_marks"),
    [("astronaut", True), ("astronaut", False), ("closed-lips", True)],
    ids=["phoneme-marks", "energy-fallback", "closed-lips-upload"],
)
def test_mouth_follows_the_speech(
    backend: PhotoBackend, spoken: SpokenText, closed_lips: str, avatar: str, with_marks: bool
) -> None:
    renderer = backend.open(closed_lips if avatar == "closed-lips" else avatar, 512, 512, FPS, 24000, LOOP)
    drives = spoken.drives if with_marks else frame_drives(spoken.pcm, [], with_marks=False)
    frames, track = render(renderer, drives)
    openings = mouth_openings(frames)
    assert not np.isnan(openings).any(), "the landmark model finds the face in every output frame"
    times = np.arange(len(frames)) / FPS
    sync = measure(openings, spoken.envelope(), times, speech_span(spoken), track)
    assert sync.envelope_correlation > 0.3, sync
    assert sync.track_correlation is not None and sync.track_correlation > 0.7, sync
    assert sync.silence_opening < 0.075, "the mouth is closed in silence"
    assert sync.speech_opening > sync.silence_opening + 0.04, "and clearly opens while speaking"
    assert sync.mouth_onset_s is not None and abs(sync.mouth_onset_s - sync.audio_onset_s) <= 0.08, sync
    # After the speech the mouth returns to rest.
    after = openings[times > speech_span(spoken)[1] + 0.4]
    assert after.size and after.max() < 0.075
    if avatar == "closed-lips":  # the painted interior: dark between the lips at the widest opening
        widest = frames[int(np.argmax(track))]
        x0, y0, x1, y1 = renderer.warp.rig.mouth.box
        assert (widest[y0:y1, x0:x1].max(axis=-1) < 60).sum() > 50


def test_identity_is_kept_outside_the_mouth(backend: PhotoBackend, spoken: SpokenText) -> None:
    renderer = backend.open("astronaut", 512, 512, FPS, 24000, LOOP)
    source = renderer.warp.rig.image
    x0, y0, x1, y1 = renderer.warp.rig.mouth.box
    outside = np.ones(source.shape[:2], bool)
    outside[y0:y1, x0:x1] = False
    gray_source = cv2.cvtColor(source, cv2.COLOR_RGB2GRAY)
    frames, _ = render(renderer, spoken.drives)
    for frame in frames[::3]:
        _, ssim_map = structural_similarity(gray_source, cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY), full=True)
        assert ssim_map[outside].mean() > 0.85
        assert peak_signal_noise_ratio(source[outside], frame[outside]) > 26.0
    # ... while the mouth region does change during speech.
    changed = max(np.abs(f[y0:y1, x0:x1].astype(int) - frames[0][y0:y1, x0:x1]).mean() for f in frames)
    assert changed > 3.0


async def _frames(renderer: PhotoRenderer, drives: list[Drive]) -> list[bytes]:
    async def feed():
        for drive in drives:
            yield drive

    return [frame.data async for frame in renderer.render(feed())]


async def test_idle_blinks_and_sways_and_rewinds_exactly(backend: PhotoBackend) -> None:
    renderer = backend.open("astronaut", 256, 256, FPS, 24000, LOOP)
    frames = await _frames(renderer, [Drive(i) for i in range(FPS * 7)])
    rig = renderer.warp.rig
    rgbs = [i420_to_rgb(f, 256, 256) for f in frames]
    eye_change = []
    for rgb in rgbs:
        change = 0.0
        for eye in rig.eyes:
            x0, y0, x1, y1 = eye.box
            change = max(change, float(np.abs(rgb[y0:y1, x0:x1].astype(int) - rgbs[0][y0:y1, x0:x1]).mean()))
        eye_change.append(change)
    assert max(eye_change) > 8.0, "the eyes blink within 7 s of idle"
    assert len(set(frames)) > len(frames) // 2, "the head is never frozen"
    # A reset replays the same frames (the idle animation is a function of the loop phase).
    await renderer.reset(100, epoch=1)
    again = await _frames(renderer, [Drive(i, epoch=1) for i in range(100, 110)])
    assert again == frames[100:110]
