"""The training curriculum (dataloader.Curriculum): some tags' documents first, every tag's share kept."""

import numpy as np
import pytest

from data.index import tag_ids_at
from dataloader import Curriculum, TaggedData, TrainSampler
from errors import UserError


def draw(sampler: TrainSampler, iterations: int) -> np.ndarray:
    return np.concatenate([sampler.next_iteration().ravel() for _ in range(iterations)])


def test_curriculum_goes_first_and_keeps_every_share(tiny_data):
    data = TaggedData(tiny_data, 16)
    index = data.index["train"]
    focus = [data.tags.index(t) for t in ("Math", "Logic")]
    curriculum = Curriculum(data, ["Math", "Logic"], iters=40, max_iters=400)
    sampler = TrainSampler(len(data.tokens["train"]), 16, 8, 1, seed=0, curriculum=curriculum)
    first, later = draw(sampler, 40), draw(sampler, 360)
    # a window's first token belongs to a curriculum document in the first iterations, always
    assert np.isin(tag_ids_at(index, first), focus).all()
    assert not np.isin(tag_ids_at(index, later), focus).all()
    overall = np.isin(tag_ids_at(index, np.concatenate([first, later])), focus).mean()
    assert abs(overall - curriculum.share) < 0.03
    assert (np.concatenate([first, later]) <= len(data.tokens["train"]) - 17).all()


def test_a_curriculum_longer_than_its_share_is_capped_and_resumes_exactly(tiny_data):
    data = TaggedData(tiny_data, 16)
    curriculum = Curriculum(data, ["Math"], iters=10_000, max_iters=100)
    assert curriculum.iters == int(curriculum.share * 100) and curriculum.later < 0.01
    a = TrainSampler(len(data.tokens["train"]), 16, 4, 1, seed=3, curriculum=curriculum)
    draw(a, 7)
    b = TrainSampler(len(data.tokens["train"]), 16, 4, 1, seed=99, curriculum=curriculum)
    b.load_state_dict(a.state_dict())
    assert (draw(a, 5) == draw(b, 5)).all()


def test_curriculum_tags_the_dataset_lacks_are_one_line(tiny_data):
    data = TaggedData(tiny_data, 16)
    with pytest.raises(UserError, match="curriculum_tags=Nope: the dataset has none of them"):
        Curriculum(data, ["Nope"], 10, 100)
