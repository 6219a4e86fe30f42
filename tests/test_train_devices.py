"""The choice of the device count of the data mesh (`train.devices`)."""

import json
import time

import jax
import pytest

from train.config import ConfigError
from train.devices import MARGIN, candidates, choose, time_calls


def test_candidates_divide_the_batch():
    assert candidates(16, 4) == [1, 2, 4]
    assert candidates(6, 4) == [1, 2]
    assert candidates(12, 3) == [1, 2, 3]
    assert candidates(9, 3) == [1, 3]


def test_auto_times_each_count_keeps_the_fastest_and_resume_reuses_it(tmp_path):
    assert len(jax.devices()) == 4 and jax.devices()[0].platform == "cpu"
    timed = []

    def time_step(devices):
        timed.append(len(devices))
        return {1: 0.30, 2: 0.12, 4: 0.20}[len(devices)]

    messages = []
    devices = choose("auto", 16, tmp_path, time_step, log=messages.append)
    assert timed == [1, 2, 4] and devices == jax.devices()[:2]
    assert "fastest measured" in messages[0] and "2 -> 120.0 ms/step" in messages[0]
    stored = json.loads((tmp_path / "devices.json").read_text())
    assert stored["count"] == 2 and stored["ms_per_step"] == {"1": 300.0, "2": 120.0, "4": 200.0}
    # A resumed run uses the stored count, whatever it would measure now.
    again = choose("auto", 16, tmp_path, lambda devices: pytest.fail("must not time again"), log=messages.append)
    assert again == devices and "stored" in messages[-1]


def test_explicit_count(tmp_path):
    assert choose(4, 16, tmp_path / "a", lambda d: pytest.fail("no timing"), log=lambda m: None) == jax.devices()
    with pytest.raises(ConfigError, match="train.devices = 8, but only 4"):
        choose(8, 16, tmp_path / "b", lambda d: 0.0, log=lambda m: None)


@pytest.mark.parametrize(
    "timings, expected",
    [
        ({1: 0.30, 2: 0.29, 4: 0.50}, 1),  # 3% faster on 2: within the margin, 1 is kept
        ({1: 0.30, 2: 0.25, 4: 0.50}, 2),  # 17% faster: 2
        ({1: 0.30, 2: 0.20, 4: 0.195}, 2),  # 4 beats 2 by 2.5%: 2
        ({1: 0.30, 2: 0.40, 4: 0.20}, 4),
    ],
)
def test_auto_keeps_fewer_devices_in_a_near_tie(tmp_path, timings, expected):
    assert MARGIN == 0.05
    devices = choose("auto", 16, tmp_path, lambda d: timings[len(d)], log=lambda m: None)
    assert len(devices) == expected


def test_time_calls_is_the_median_after_two_warm_up_calls():
    durations = iter([0.3, 0.3, 0.001, 0.2, 0.001, 0.001, 0.001, 0.001, 0.001])
    calls = []

    def fn():
        calls.append(1)
        time.sleep(next(durations))

    seconds = time_calls(fn)
    assert len(calls) == 9  # two warm-up calls and seven timed ones
    assert 0.001 <= seconds < 0.05  # the median; the slow call would put the mean above 0.03
