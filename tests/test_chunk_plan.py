"""The session's chunk plan: which chunks the video worker renders (speech and the settle frames after it, every
frame of them), what each commit says, and how cuts and reconnections change it. Pure: no I/O."""

from __future__ import annotations

from services.packager.audio import FULL_LOOKAHEAD_SAMPLES
from services.session.chunks import AUDIO_LOOKAHEAD_SAMPLES, ChunkPlan, IdleLoopInfo
from services.session.timeline import Mark, Timeline

N = 12
SPF = 960
LOOP = IdleLoopInfo("a" * 32, frames=240, settle_frames=4)


def pcm(frames: int, value: int = 1000) -> bytes:
    return value.to_bytes(2, "little", signed=True) * (frames * SPF)


class Harness:
    """A timeline and its plan, with the drives the plan handed out."""

    def __init__(self, loop: IdleLoopInfo = LOOP, phase_offset: int = 0) -> None:
        self.timeline = Timeline()
        self.plan = ChunkPlan(N, phase_offset, SPF)
        self.plan.loop = loop
        self.drives: list[int] = []

    def idle(self, frames: int) -> None:
        for _ in range(frames):
            self._place(self.timeline.idle_slot())

    def speak(self, utterance: str, frames: int) -> None:
        self.timeline.begin(utterance)
        self.timeline.add_audio(utterance, pcm(frames), [Mark("hi", 0, SPF, 0)])
        self.timeline.finish_audio(utterance)
        while self.timeline.current is not None:
            self._place(self.timeline.next_slot(False))

    def _place(self, slot) -> None:
        self.drives += [s.frame_index for s in self.plan.placed(slot, self.timeline.slots)]

    def commit(self):
        commit = self.plan.commit(self.timeline.slots)
        for index in range(commit.start_frame_index, commit.start_frame_index + N):
            self.timeline.pop(index)
        return commit


def test_idle_chunks_show_the_loop_and_drive_nothing() -> None:
    h = Harness(phase_offset=36)
    h.idle(3 * N)
    commits = [h.commit() for _ in range(3)]
    assert h.drives == []
    assert [c.rendered for c in commits] == [False, False, False]
    assert [c.idle_chunk_index for c in commits] == [3, 4, 5]  # (start + offset) mod 240, in chunks
    assert all(c.pcm_s16le == b"" and not c.speech and c.idle_loop_id == LOOP.loop_id for c in commits)


def test_the_loop_wraps_around() -> None:
    h = Harness(phase_offset=228)
    h.idle(2 * N)
    assert [h.commit().idle_chunk_index for _ in range(2)] == [19, 0]


def test_speech_chunks_drive_every_frame_including_the_idle_ones_before_and_the_settle_after() -> None:
    h = Harness()
    h.idle(15)  # chunk 0 idle, three idle frames of chunk 1 placed before the speech arrives
    assert h.drives == []
    h.speak("u1", 5)  # frames 15..19
    assert h.drives == list(range(12, 20)), "the idle frames of the chunk go out first, in order"
    h.idle(20)  # frames 20..39: 20..23 settle, then idle
    assert h.drives == list(range(12, 24)), "the rest of chunk 1 (settle included), nothing of chunk 2"
    commits = [h.commit() for _ in range(3)]
    assert [c.rendered for c in commits] == [False, True, False]
    assert commits[1].speech and len(commits[1].pcm_s16le) == 2 * N * SPF
    assert commits[1].pcm_s16le[: 2 * 3 * SPF] == bytes(2 * 3 * SPF), "silence under the idle frames"


def test_settle_frames_spilling_into_the_next_chunk_make_it_rendered() -> None:
    h = Harness()
    h.speak("u1", 10)  # frames 0..9, settle 10..13: into chunk 1
    h.idle(N * 2 + 2)
    assert h.drives == list(range(0, 24))
    assert [h.commit().rendered for _ in range(2)] == [True, True]


def test_commit_epoch_is_the_chunks_latest() -> None:
    h = Harness()
    h.speak("u1", 10)
    h.timeline.cut(6)
    h.plan.cut(6, h.timeline.slots)
    h.idle(N)
    commit = h.commit()
    assert commit.rendered and commit.epoch == 1


def test_a_cut_drops_later_rendered_chunks_and_forgets_their_drives() -> None:
    h = Harness()
    h.idle(2)
    h.speak("u1", 30)  # frames 2..31: chunks 0, 1, 2 rendered
    assert h.plan.rendered == {0, 12, 24}
    h.timeline.cut(14)
    h.plan.cut(14, h.timeline.slots)
    assert h.plan.rendered == {0, 12}, "chunk 1 keeps its speech before the cut"
    assert max(h.plan.sent) == 13
    h.idle(30)  # frames 14..43: 14..17 settle (rendered anyway), the rest of chunk 1 goes out again
    assert [d for d in h.drives if d >= 14][-1] == 23
    assert [h.commit().rendered for _ in range(3)] == [True, True, False]


def test_a_cut_at_a_chunk_start_before_any_speech_leaves_it_to_the_loop() -> None:
    h = Harness()
    h.idle(N + 4)  # frames 0..15
    h.speak("u1", 20)  # frames 16..35
    assert 12 in h.plan.rendered
    h.timeline.cut(12)
    h.plan.cut(12, h.timeline.slots)
    assert h.plan.rendered == set()
    h.idle(N)
    h.commit()
    assert h.commit().rendered is False


def test_reconnection_hands_out_every_frame_of_the_rendered_chunks_again() -> None:
    h = Harness()
    h.idle(3)
    h.speak("u1", 15)  # frames 3..17
    again = h.plan.reconnected(h.timeline.slots)
    assert [s.frame_index for s in again] == list(range(0, 18))


def test_render_every_chunk_when_the_worker_asks() -> None:
    h = Harness(IdleLoopInfo("b" * 32, 240, 4, render_every_chunk=True))
    h.idle(N)
    assert h.drives == list(range(N)) and h.commit().rendered


def test_a_commit_carries_the_audio_placed_after_its_chunk_and_makes_it_final() -> None:
    h = Harness()
    assert AUDIO_LOOKAHEAD_SAMPLES == FULL_LOOKAHEAD_SAMPLES, "what the packager needs to finish every packet"
    assert h.plan.lookahead_frames == 4  # 3,071 samples at 960 per frame
    h.idle(N - 2)
    h.speak("u1", 10)  # frames 10..19: speech starts two frames before chunk 0 ends
    first = h.commit()
    assert first.lookahead_samples == 4 * SPF and first.lookahead_pcm_s16le == pcm(4)
    assert h.plan.final_until == N + 4
    h.idle(4)  # frames 20..23: the rest of chunk 1
    second = h.commit()
    assert second.pcm_s16le[: 2 * 4 * SPF] == first.lookahead_pcm_s16le, "the next chunk starts with the lookahead"
    assert second.lookahead_samples == 0 and h.plan.final_until == 2 * N, "nothing placed after chunk 1 yet"
    h.idle(2 * N)
    third = h.commit()
    assert third.lookahead_samples == 4 * SPF and third.lookahead_pcm_s16le == b"", "silence: empty"
    assert h.plan.final_until == 3 * N + 4


def test_the_lookahead_stops_at_the_first_frame_not_placed() -> None:
    h = Harness()
    h.idle(N + 1)
    assert h.commit().lookahead_samples == SPF
