"""A worker's capacity comes from measurements, and a bad one never locks it shut: with an estimate that says no
stream fits (taken while the renderer's kernels compiled on a fresh machine, say), it still takes one stream, whose
running corrects the estimate."""

from __future__ import annotations

from services.video.capacity import CapacityMeter


def test_capacity_follows_the_budget_and_the_measured_costs() -> None:
    meter = CapacityMeter(budget_cores=2.0, fps=25, speaking_share=0.25, max_streams=64, frame_cpu_s=0.004)
    meter.idle_stream_cores = 0.01
    # per stream: 0.01 + 0.25 * 0.1 = 0.035 cores -> 57 streams
    assert meter.capacity() == 57
    meter.max_streams = 16
    assert meter.capacity() == 16


def test_a_worker_whose_estimate_admits_nothing_still_takes_one_stream() -> None:
    meter = CapacityMeter(budget_cores=1.5, fps=25, speaking_share=0.25, max_streams=64, frame_cpu_s=0.004)
    meter.idle_stream_cores = 1.6  # a window in which one stream seemed to cost more than the whole budget
    assert meter.capacity() == 1
    assert meter.speaking_capacity(0) == 1
