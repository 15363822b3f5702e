"""The data a learner may draw (context.data) and the scores of revisit evaluation."""

from __future__ import annotations

import pytest
import torch

from nevisbench.config import compose
from nevisbench.errors import PluginError
from nevisbench.run.learner.data import StreamData
from nevisbench.run.store.continual import continual_scores
from nevisbench.tasks import get_stream


@pytest.fixture
def data(tiny):
    cfg = compose([*tiny, "stream.tasks=[digits,faces,shapes]"])
    stream = get_stream("demo").select(["digits", "faces", "shapes"])
    loads = []

    def load(spec, seed):
        loads.append((spec.key, seed))
        return spec.load(root="", image_size=16, seed=seed)

    source = StreamData(cfg, stream.tasks, load=load)
    source.loads = loads
    return source


def test_a_learner_draws_only_from_tasks_the_stream_has_reached(data):
    with pytest.raises(PluginError, match="task 0 is not available"):
        data.train_batch(0, 4)  # before the first task
    data.enter(1)
    assert [t.key for t in data.tasks()] == ["digits", "faces"]
    x, y = data.train_batch(0, 8, generator=torch.Generator().manual_seed(0))
    assert x.shape == (8, 3, 16, 16) and x.dtype == torch.float32 and y.shape == (8,)
    with pytest.raises(PluginError, match=r"task 2 is not available .*0=digits, 1=faces"):
        data.train_batch(2, 4)
    for bad in (-1, "0", 1.0, True, None):
        with pytest.raises(PluginError):
            data.train_batch(bad, 4)


def test_draws_are_copies_from_the_train_split_and_repeat_with_the_generator(data):
    data.enter(0)
    train = data._data(0).train
    before = train.images.clone()
    x, y = data.train_examples(0, [0, 5, 7])
    assert torch.equal(y, train.labels[[0, 5, 7]])
    x += 100
    y += 1
    assert torch.equal(train.images, before) and torch.equal(data.train_examples(0, [0, 5, 7])[1], train.labels[[0, 5, 7]])
    a = data.train_batch(0, 16, generator=torch.Generator().manual_seed(3))
    b = data.train_batch(0, 16, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert data.num_train(0) == len(train)
    with pytest.raises(PluginError, match=r"indices must lie in 0\.\."):
        data.train_examples(0, [len(train)])
    with pytest.raises(PluginError, match="batch_size must be a positive int"):
        data.train_batch(0, 0)
    assert not any(hasattr(data, name) for name in ("dev", "test", "dev_batch", "test_batch"))


def test_earlier_tasks_load_with_the_seed_they_trained_with(data):
    data.enter(2)
    data.num_train(0)
    data.num_train(1)
    assert ("digits", 0) in data.loads and ("faces", 1) in data.loads  # seed + index, as the runner loads them


def test_context_data_travels_to_a_search_worker_as_a_handle_not_as_data(data):
    import copy
    import pickle

    assert copy.deepcopy(data) is data
    data.enter(1)
    data.num_train(0)
    copied = pickle.loads(pickle.dumps(data))
    assert copied._loaded == {} and [t.key for t in copied.tasks()] == ["digits", "faces"]
    assert copied.num_train(0) == data.num_train(0)


def test_forgetting_scores_from_the_accuracy_matrix():
    lines = [
        {"task": "a", "test_error": 0.1, "revisit": None},
        {"task": "b", "test_error": 0.2, "revisit": {"test_error": [0.3]}},
        {"task": "c", "test_error": 0.4, "revisit": {"test_error": [0.5, 0.25]}},
    ]
    scores = continual_scores(lines)
    r = scores["accuracy_matrix"]
    assert r == [[0.9, None, None], [0.7, 0.8, None], [0.5, 0.75, 0.6]]
    assert scores["average_accuracy"] == pytest.approx((0.5 + 0.75 + 0.6) / 3)
    assert scores["backward_transfer"] == pytest.approx(((0.5 - 0.9) + (0.75 - 0.8)) / 2)
    assert scores["forgetting"] == pytest.approx(((0.9 - 0.5) + (0.8 - 0.75)) / 2)
    assert continual_scores([{"task": "a", "test_error": 0.1}]) is None


def test_a_learner_holds_no_way_to_move_the_stream_on(data):
    """`context.data.enter(i + 1)` let a learner draw the next task's data before it started."""
    import copy
    import pickle

    data.enter(0)
    view = data.for_learner()
    assert not any(hasattr(view, name) for name in ("enter", "task_data", "_data", "_current"))
    assert [t.key for t in view.tasks()] == ["digits"] and view.num_train(0) == data.num_train(0)
    with pytest.raises(PluginError, match="task 1 is not available"):
        view.train_batch(1, 4)
    assert copy.deepcopy(view) is view and [t.key for t in pickle.loads(pickle.dumps(view)).tasks()] == ["digits"]


def test_a_built_learner_gets_the_view(tiny):
    from nevisbench.run.learner.data import LearnerData
    from nevisbench.run.learner.plugin import build_learner

    cfg = compose([*tiny, "stream.tasks=[digits,faces]"])
    learner = build_learner(cfg, 8, data=StreamData(cfg, get_stream("demo").select(["digits", "faces"]).tasks))
    assert isinstance(learner.context.data, LearnerData) and not hasattr(learner.context.data, "enter")


@pytest.mark.parametrize("bad", [[0.9, 1.7], [True], torch.tensor([True, False]), torch.tensor([0.0, 1.0]),
                                 [[0, 1]], "01", 3, None, [0, None]])
def test_indices_that_are_not_integers_are_refused_in_one_line(data, bad):
    import numpy as np

    data.enter(0)
    with pytest.raises(PluginError, match="context.data.train_examples: indices") as info:
        data.train_examples(0, bad)
    assert "\n" not in str(info.value)
    mask = np.zeros(data.num_train(0), dtype=bool)
    mask[0] = True
    with pytest.raises(PluginError, match="must be integers"):
        data.for_learner().train_examples(0, mask)  # a boolean mask of one example returned 1,006 examples


def test_integer_indices_of_every_kind_are_taken(data):
    import numpy as np

    data.enter(0)
    expected = data.train_examples(0, [1, 3])[1]
    for good in ((1, 3), range(1, 4, 2), np.array([1, 3], dtype=np.uint8), torch.tensor([1, 3], dtype=torch.int32),
                 [np.int64(1), 3]):
        assert torch.equal(data.train_examples(0, good)[1], expected)
    with pytest.raises(PluginError, match=r"indices must lie in 0\.\."):
        data.train_examples(0, np.array([-1]))
