"""Sequence parallelism: the tiny DiT split over 2 CPU processes (gloo) computes what one process does."""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from services.video.infinitetalk import parallel
from services.video.infinitetalk.model import TINY
from services.video.infinitetalk.tiny import build_tiny_model


def inputs(seed: int = 5) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    frames = 5  # latent frames -> 17 video frames of audio windows
    return {
        "latents": torch.randn(1, 36, frames, 6, 10, generator=generator),  # 5 x 3 x 5 = 75 tokens: uneven shards
        "timestep": torch.tensor([700.0]),
        "text": torch.randn(1, 7, TINY.text_dim, generator=generator),
        "image": torch.randn(1, 5, TINY.image_dim, generator=generator),
        "audio": torch.randn(1, 4 * (frames - 1) + 1, 5, TINY.audio_blocks, TINY.audio_channels, generator=generator),
    }


def _rank(rank: int, world: int, port: int, results) -> None:
    os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = "127.0.0.1", str(port)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        torch.manual_seed(0)
        model = build_tiny_model(seed=3)
        hook = parallel.install(model, rank, world)
        with torch.no_grad():
            out = model(**inputs(), block_cache=hook)
        results[rank] = out
    finally:
        dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize("world", [2])  # TINY has 2 heads: heads must split over the ranks
def test_sharded_forward_equals_one_process(world: int) -> None:
    with torch.no_grad():
        expected = build_tiny_model(seed=3)(**inputs())
    manager = mp.Manager()
    results = manager.dict()
    mp.spawn(_rank, args=(world, free_port(), results), nprocs=world, join=True)
    assert sorted(results.keys()) == list(range(world))
    for rank in range(world):
        torch.testing.assert_close(results[rank], expected, rtol=1e-4, atol=1e-5)


def test_shards_cover_the_sequence_in_order() -> None:
    shards = [parallel.Shard(rank, 3) for rank in range(3)]
    ranges = [shard.split(76) for shard in shards]
    assert ranges == [(0, 26), (26, 51), (51, 76)]


def _serve(rank: int, world: int, port: int, results) -> None:
    os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = "127.0.0.1", str(port)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        model = build_tiny_model(seed=3)
        hook = parallel.install(model, rank, world)
        if rank == 0:  # the service's process: calls the model like any other
            proxy = parallel.ParallelTransformer(model, hook)
            with torch.no_grad():
                results["outputs"] = [proxy(**inputs(seed)) for seed in (1, 2)]
            proxy.stop_followers()
        else:
            results["followed"] = parallel.follow(model, hook)
    finally:
        dist.destroy_process_group()


def test_rank_zero_drives_the_followers() -> None:
    manager = mp.Manager()
    results = manager.dict()
    mp.spawn(_serve, args=(2, free_port(), results), nprocs=2, join=True)
    assert results["followed"] == 2, "the follower computed its shard of both forwards, then stopped"
    with torch.no_grad():
        single = build_tiny_model(seed=3)
        expected = [single(**inputs(seed)) for seed in (1, 2)]
    for got, want in zip(results["outputs"], expected, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


def _video_worker(rank: int, world: int, port: int, results) -> None:
    """One rank of a sequence-parallel video worker, configured as the service is (environment)."""
    os.environ.update(
        {
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
            "RANK": str(rank),
            "WORLD_SIZE": str(world),
            "INFINITETALK_SEQUENCE_PARALLEL": "1",
            "INFINITETALK_TINY": "1",
            "INFINITETALK_DEVICE": "cpu",
            "INFINITETALK_STEPS": "2",
        }
    )
    from services.video.infinitetalk import loader
    from services.video.photo.backend import PhotoBackend

    try:
        if loader.parallel_rank() > 0:
            results["followed"] = loader.follow_from_env()
            return
        backend = loader.backend_from_env(PhotoBackend())
        generator = backend.generator
        reference = generator.reference(
            torch.zeros(64, 64, 3, dtype=torch.uint8).numpy() + 120, "a person talking", "static"
        )
        audio = torch.randn(81, 5, TINY.audio_blocks, TINY.audio_channels, generator=torch.Generator().manual_seed(9))
        results["video"] = generator.generate(reference, audio, None, seed=4)
        generator.transformer.stop_followers()
    finally:
        dist.destroy_process_group()


def test_a_sequence_parallel_video_worker_generates_the_same_chunk(monkeypatch) -> None:
    manager = mp.Manager()
    results = manager.dict()
    mp.spawn(_video_worker, args=(2, free_port(), results), nprocs=2, join=True)
    assert results["followed"] == 2 * 3, "2 steps x 3 guidance passes computed with the follower"
    for key, value in {"INFINITETALK_TINY": "1", "INFINITETALK_DEVICE": "cpu", "INFINITETALK_STEPS": "2"}.items():
        monkeypatch.setenv(key, value)
    from services.video.infinitetalk import loader
    from services.video.photo.backend import PhotoBackend

    generator = loader.backend_from_env(PhotoBackend()).generator
    reference = generator.reference(
        torch.zeros(64, 64, 3, dtype=torch.uint8).numpy() + 120, "a person talking", "static"
    )
    audio = torch.randn(81, 5, TINY.audio_blocks, TINY.audio_channels, generator=torch.Generator().manual_seed(9))
    single = generator.generate(reference, audio, None, seed=4)
    torch.testing.assert_close(results["video"], single, rtol=1e-3, atol=1e-3)
