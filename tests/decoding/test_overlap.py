"""--overlap auto: the lanes time a few calls each way per call shape and keep the faster."""

import threading
import time

import torch
from engine_helpers import ids, random_prompts, setup

from proxytool.decoding.overlap import TRIALS, Lanes


class _Slow:
    """A stand-in source whose work costs ``seconds`` in the calling thread (``elsewhere`` in a lane)."""

    device = torch.device("cpu")

    def __init__(self, name: str, seconds: float, elsewhere: float):
        self.name, self.seconds, self.elsewhere = name, seconds, elsewhere

    def work(self) -> list[str]:
        alone = threading.current_thread() is threading.main_thread()
        time.sleep(self.seconds if alone else self.elsewhere)
        return [self.name]


def _run(lanes: Lanes, sources, calls: int, shape=(1, 1)):
    return [lanes.map(lambda s: s.work(), sources, shape) for _ in range(calls)]


def test_lanes_win_where_the_sources_overlap():
    base, pair = _Slow("base", 0.02, 0.02), _Slow("pair", 0.02, 0.02)  # two lanes: 20 ms, one thread: 40 ms
    lanes = Lanes([[base], [pair]], [1, 1], measure=True)
    results = _run(lanes, [base, pair], 1 + 2 * TRIALS)
    assert all(r == {id(base): ["base"], id(pair): ["pair"]} for r in results)
    assert lanes.choices() == {"(1, 1)": "lanes"}


def test_one_thread_wins_where_a_lane_is_slower_than_everything_in_turn():
    base, pair = _Slow("base", 0.005, 0.05), _Slow("pair", 0.005, 0.05)  # lanes 50 ms, one thread 10 ms
    lanes = Lanes([[base], [pair]], [1, 1], measure=True)
    _run(lanes, [base, pair], 1 + 2 * TRIALS)
    assert lanes.choices() == {"(1, 1)": "one thread"}
    start = time.perf_counter()
    _run(lanes, [base, pair], 3)  # the choice is kept: no lane call any more
    assert time.perf_counter() - start < 3 * 0.05
    assert lanes.choices() == {"(1, 1)": "one thread"}


def test_each_call_shape_is_measured_on_its_own_and_fixed_lanes_never_measure():
    base, pair = _Slow("base", 0.001, 0.001), _Slow("pair", 0.001, 0.001)
    lanes = Lanes([[base], [pair]], [1, 1], measure=True)
    _run(lanes, [base, pair], 1 + 2 * TRIALS, shape=(1, 1))
    _run(lanes, [base, pair], 2, shape=(8, 1))
    assert list(lanes.choices()) == ["(1, 1)"]  # (8, 1) still measuring
    fixed = Lanes([[base], [pair]], [1, 1])
    _run(fixed, [base, pair], 1 + 2 * TRIALS)
    assert fixed.choices() == {}


def test_auto_measures_with_two_threads_and_decodes_the_same_tokens(tiny_models):
    prompts = random_prompts(4, seed=21)
    t = tiny_models
    kwargs = dict(experts=[str(t["expert"])], anti_experts=[str(t["anti"])])
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        auto = setup(t, overlap="auto", **kwargs)
        assert auto.lanes is not None and auto.lanes.measure
        measured = ids(auto, prompts, n=12)  # more steps than the measurement takes
        assert auto.lanes.choices()  # a choice was made for the one-token steps
    finally:
        torch.set_num_threads(before)
    assert measured == ids(setup(t, overlap="off", **kwargs), prompts, n=12)
