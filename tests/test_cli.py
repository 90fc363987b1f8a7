"""The command line as a person uses it: `render` with no stack, `say` against a running one."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from tests.hls_analysis import decode, loud_span

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="session")]

CLI = [sys.executable, "-m", "infinitetalk_live"]


def check_mp4_with_speech(path: Path, min_speech_s: float) -> None:
    data = path.read_bytes()
    with av.open(str(path)) as container:
        assert container.format.name.startswith("mov,mp4")
        assert container.streams.video[0].codec_context.name == "h264"
        assert container.streams.audio[0].codec_context.name == "aac"
    media = decode(data)
    assert (media.width, media.height) == (512, 512) and len(media.frames) > 25
    span = loud_span(media.audio, media.sample_rate)
    assert span is not None and span[1] - span[0] > min_speech_s
    speech = media.audio[int(span[0] * media.sample_rate) : int(span[1] * media.sample_rate)]
    assert np.sqrt(np.mean(speech**2)) > 0.03


async def test_render_writes_an_mp4_with_speech(tmp_path, artifacts):
    out = tmp_path / "hello.mp4"
    process = await asyncio.create_subprocess_exec(
        *CLI, "render", "Hello there. This is a rendered avatar.", "--out", str(out),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    stdout, stderr = await asyncio.wait_for(process.communicate(), 180)
    assert process.returncode == 0, stderr.decode()[-2000:]
    assert f"wrote {out}" in stdout.decode()
    check_mp4_with_speech(out, 1.5)
    (artifacts / "render_hello.mp4").write_bytes(out.read_bytes())


async def test_say_prints_words_and_first_speech_and_records(stack, tmp_path):
    out = tmp_path / "said.mp4"
    process = await asyncio.create_subprocess_exec(
        *CLI, "say", "Good morning, how are you today?", "--addr", stack.ports.addr("session"),
        "--record", str(out), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    stdout, stderr = await asyncio.wait_for(process.communicate(), 120)
    lines = stdout.decode().splitlines()
    assert process.returncode == 0, stdout.decode() + stderr.decode()
    assert lines[0].startswith("playlist: http://127.0.0.1:") and lines[0].endswith("/index.m3u8")
    assert "Good morning, how are you today?" in stdout.decode()
    assert lines[-1].startswith("first-speech-ms: ") and int(lines[-1].split()[-1]) > 0
    check_mp4_with_speech(out, 1.0)


async def test_say_reports_an_unreachable_stack_in_one_line():
    process = await asyncio.create_subprocess_exec(
        *CLI, "say", "hello", "--addr", "127.0.0.1:1",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, stderr = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 1
    message = stderr.decode().strip()
    assert message.startswith("infinitetalk say:") and "Traceback" not in message


async def test_say_animates_a_portrait_and_names_why_a_file_is_refused(stack, tmp_path):
    from tests.test_e2e_portraits import astronaut_jpeg

    photo = tmp_path / "me.jpg"
    photo.write_bytes(astronaut_jpeg())
    process = await asyncio.create_subprocess_exec(
        *CLI, "say", "Hello from a photo.", "--addr", stack.ports.addr("session"), "--portrait", str(photo),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    stdout, stderr = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode == 0, stdout.decode() + stderr.decode()
    assert "Hello from a photo." in stdout.decode()

    notes = tmp_path / "notes.png"
    notes.write_bytes(b"not a picture at all\n" * 50)
    process = await asyncio.create_subprocess_exec(
        *CLI, "say", "hello", "--addr", stack.ports.addr("session"), "--portrait", str(notes),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, stderr = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 1
    message = stderr.decode().strip()
    assert message == "infinitetalk say: INVALID_ARGUMENT: the portrait is not a JPEG, PNG or WebP image", message


async def test_contact_sheet_shows_frames_across_a_sentence(tmp_path) -> None:
    out = tmp_path / "sheet.png"
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "infinitetalk_live.cli", "contact-sheet", "--text", "Hello there, how are you?",
         "--size", "256", "--columns", "3", "--rows", "1", "--tile", "128", "--out", str(out)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    sheet = cv2.imread(str(out))
    assert sheet.shape[1] == 3 * 128 and sheet.shape[0] == 128 + 120, "3 frames over the lip-sync strip"
    tiles = [sheet[:128, i * 128 : (i + 1) * 128].astype(int) for i in range(3)]
    assert max(np.abs(tiles[i] - tiles[0]).mean() for i in (1, 2)) > 0.5, "frames across the sentence differ"
