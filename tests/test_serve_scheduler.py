"""scheduler.py in-process: requests joining and leaving a running batch decode exactly as they would alone."""

import threading
import time

import torch

import engine
from sampling import TokenSampler
from scheduler import Event, Request, Scheduler, cheap_padding, prefill_groups

PROMPTS = ["Hello there", "[Math] 1+1=2 2+2=4 3+3=", "a b c d e f g h i j k l m n o p q r s t u v w", "x",
           "[Code] def add(a, b):", "The"]


def run(scheduler: Scheduler, requests: list[tuple[list[int], int, TokenSampler]], gap: float) -> list[list[Event]]:
    events: list[list[Event]] = [[] for _ in requests]
    done = threading.Semaphore(0)

    def emitter(i):
        def emit(event: Event):
            events[i].append(event)
            if event.finish_reason or event.error:
                done.release()
        return emit

    for i, (ids, n, sampler) in enumerate(requests):
        assert scheduler.submit(Request(ids, n, sampler, emitter(i)))
        time.sleep(gap * i)
    for _ in requests:
        assert done.acquire(timeout=60)
    return events


def test_joining_and_leaving_rows_decode_as_alone(tiny_model):  # noqa: F811
    """Greedy and seeded answers equal the ones given alone, whether requests arrive together (one padded
    prefill) or mid-decode (prompts riding in the decode step), and whatever row they get."""
    greedy = engine.Sampling(temperature=0, top_k=None)
    alone = ["".join(t for _, t in engine.stream(tiny_model, engine.encode(p), 4 + 3 * i, greedy))
             for i, p in enumerate(PROMPTS)]
    scheduler = Scheduler(tiny_model, max_batch=3, max_queue=8)
    try:
        for gap in (0.0, 0.004):
            requests = [(engine.encode(p), 4 + 3 * i, TokenSampler(0)) for i, p in enumerate(PROMPTS)]
            events = run(scheduler, requests, gap)
            assert ["".join(e.text for e in ev) for ev in events] == alone
            assert all(ev[-1].finish_reason in ("stop", "length") for ev in events)
        seeded = [(engine.encode(p), 12, TokenSampler(1.0, 20, generator=torch.Generator().manual_seed(5)))
                  for p in PROMPTS]
        first = run(scheduler, seeded[:1], 0)
        seeded = [(engine.encode(p), 12, TokenSampler(1.0, 20, generator=torch.Generator().manual_seed(5)))
                  for p in PROMPTS]
        together = run(scheduler, seeded, 0.002)
        assert "".join(e.text for e in together[0]) == "".join(e.text for e in first[0])
    finally:
        scheduler.stop()


def test_cancelled_requests_free_their_rows_and_the_queue_is_bounded(tiny_model):  # noqa: F811
    scheduler = Scheduler(tiny_model, max_batch=2, max_queue=2)
    try:
        requests = [Request(engine.encode("Hello"), 1000, TokenSampler(1.0), lambda e: None) for _ in range(5)]
        assert scheduler.submit(requests[0]) and scheduler.submit(requests[1])
        deadline = time.monotonic() + 10
        while scheduler.load()["running"] < 2 and time.monotonic() < deadline:  # both rows taken
            time.sleep(0.001)
        assert scheduler.submit(requests[2]) and scheduler.submit(requests[3])  # 2 queue places
        assert not scheduler.submit(requests[4])
        for r in requests:
            r.cancel()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and (scheduler.load()["running"] or scheduler.load()["waiting"]):
            time.sleep(0.01)
        assert scheduler.load()["running"] == 0 and scheduler.load()["waiting"] == 0
    finally:
        scheduler.stop()


def test_padding_rule_groups_similar_prompts():
    assert cheap_padding([1] * 8 + [16] * 8)
    assert not cheap_padding([1] * 8 + [500])
    groups = prefill_groups([Request([0] * n, 1, TokenSampler(0), print) for n in (3, 400, 5, 380, 4)])
    assert [[len(r.prompt) for r in g] for g in groups] == [[3, 4, 5], [380, 400]]
