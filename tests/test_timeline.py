"""The session timeline: audio cut into frames, marks placed in the session clock, gaps, completion and cuts."""

from __future__ import annotations

from services.session.timeline import Mark, Timeline

SPF = 960  # samples per frame at 24 kHz, 25 fps


def pcm(samples: int, value: int = 1000) -> bytes:
    return value.to_bytes(2, "little", signed=True) * samples


def test_idle_frames_without_an_utterance():
    timeline = Timeline()
    slots = [timeline.next_slot(force=False) for _ in range(3)]
    assert [s.frame_index for s in slots] == [0, 1, 2]
    assert all(not s.speech and s.pcm == b"" for s in slots)


def test_audio_is_cut_into_frames_and_marks_get_session_times():
    timeline = Timeline()
    timeline.next_slot(force=False)  # frame 0 idle
    timeline.begin("u1")
    marks = [Mark("hello", 0, 2 * SPF, word_index=0), Mark("h", 100, 300), Mark("world", 2 * SPF + 10, 3 * SPF, 1)]
    assert timeline.add_audio("u1", pcm(3 * SPF), marks)
    first = timeline.next_slot(force=False)
    assert first.frame_index == 1 and first.first_of_utterance and len(first.pcm) == 2 * SPF
    assert [w.text for w in first.words] == ["hello"]
    assert first.words[0].start_us == 40_000 and first.words[0].end_us == 40_000 + 80_000
    assert first.phonemes[0].start_us == 40_000 + 100 * 1_000_000 // 24_000
    second = timeline.next_slot(force=False)
    assert second.words == [] and not second.first_of_utterance
    third = timeline.next_slot(force=False)
    assert [w.text for w in third.words] == ["world"] and third.words[0].word_index == 1
    # The utterance is not complete: without audio the timeline waits, unless forced.
    assert timeline.next_slot(force=False) is None
    gap = timeline.next_slot(force=True)
    assert gap.pcm == b"" and gap.utterance_id == "" and not gap.ends_utterance


def test_completion_marks_the_last_frame_and_pads_it():
    timeline = Timeline()
    timeline.begin("u1")
    timeline.add_audio("u1", pcm(SPF + 10), [])
    timeline.finish_audio("u1")
    full = timeline.next_slot(force=False)
    last = timeline.next_slot(force=False)
    assert not full.ends_utterance
    assert last.ends_utterance == "u1" and len(last.pcm) == 2 * SPF and last.pcm[20:] == bytes(2 * SPF - 20)
    assert timeline.current is None
    assert not timeline.next_slot(force=False).speech


def test_utterance_without_audio_ends_on_an_idle_frame():
    timeline = Timeline()
    timeline.begin("u1")
    assert timeline.next_slot(force=True).ends_utterance == ""  # not started: the frame stays idle
    timeline.finish_audio("u1")
    slot = timeline.next_slot(force=False)
    assert slot.ends_utterance == "u1" and not slot.speech


def test_cut_drops_later_slots_and_starts_a_new_epoch():
    timeline = Timeline()
    timeline.begin("u1")
    timeline.add_audio("u1", pcm(10 * SPF), [Mark("late", 8 * SPF, 9 * SPF, 0)])
    for _ in range(6):
        timeline.next_slot(force=False)
    dropped = timeline.cut(3)
    assert [s.frame_index for s in dropped] == [3, 4, 5]
    assert timeline.write_head == 3 and timeline.epoch == 1 and timeline.current is None
    assert not timeline.add_audio("u1", pcm(SPF), [])  # a cut utterance gets no more audio
    slot = timeline.next_slot(force=False)
    assert slot.frame_index == 3 and slot.epoch == 1 and not slot.speech
