"""The optional metrics sinks: TensorBoard event files and Weights & Biases."""

import pathlib
import struct
import sys
import types

import numpy as np
from PIL import Image

from train.progress import MetricsLog
from train.sinks import TensorBoardSink, wandb_mode, WandbSink


def read_events(folder: pathlib.Path) -> list:
    """Every event of the TensorBoard files in `folder` (TFRecord framing: length, its CRC,
    the serialised `Event`, its CRC)."""
    from tensorboardX.proto import event_pb2

    events = []
    for path in sorted(folder.glob("events.out.tfevents.*")):
        data = path.read_bytes()
        at = 0
        while at < len(data):
            (length,) = struct.unpack("<Q", data[at : at + 8])
            event = event_pb2.Event()
            event.ParseFromString(data[at + 12 : at + 12 + length])
            events.append(event)
            at += 12 + length + 4
    return events


def scalars(events) -> dict[str, list[tuple[int, float]]]:
    out: dict[str, list] = {}
    for event in events:
        for value in event.summary.value:
            if value.HasField("simple_value"):
                out.setdefault(value.tag, []).append((event.step, value.simple_value))
    return out


def test_tensorboard_receives_every_number_and_image(tmp_path):
    png = tmp_path / "step0000004_grid16.png"
    Image.fromarray(np.full((8, 12, 3), 200, np.uint8)).save(png)
    log = MetricsLog(tmp_path / "metrics.jsonl", sinks=[TensorBoardSink(tmp_path)])
    log.write(event="start", step=0, devices=2, time=1.0)
    log.write(step=2, loss=0.75, grid=16, time=2.0)
    log.write(step=4, loss=0.5, grid=16, skipped=0, time=3.0)
    log.images([png], 4)
    log.close()
    events = read_events(tmp_path / "tensorboard")
    found = scalars(events)
    assert found["train/loss"] == [(2, 0.75), (4, 0.5)]
    assert found["train/grid"] == [(2, 16.0), (4, 16.0)] and found["train/devices"] == [(0, 2.0)]
    assert "train/time" not in found and "train/step" not in found
    images = [(e.step, v.tag, v.image) for e in events for v in e.summary.value if v.HasField("image")]
    assert [(step, tag, (im.height, im.width)) for step, tag, im in images] == [(4, "step0000004_grid16", (8, 12))]


def test_wandb_logs_numbers_and_images_in_the_mode_it_chose(tmp_path, monkeypatch):
    calls = []

    class Run:
        def log(self, values, step):
            calls.append(("log", values, step))

        def finish(self):
            calls.append(("finish",))

    fake = types.ModuleType("wandb")
    fake.init = lambda **kwargs: calls.append(("init", kwargs)) or Run()
    fake.Image = lambda path: ("image", path)
    monkeypatch.setitem(sys.modules, "wandb", fake)
    (tmp_path / "run").mkdir()
    sink = WandbSink(tmp_path / "run", "proj", "offline", {"name": "smoke"})
    sink.scalars(3, {"loss": 0.5})
    sink.image("loss", tmp_path / "loss.png", 3)
    sink.close()
    init = calls[0][1]
    assert init["mode"] == "offline" and init["project"] == "proj" and init["name"] == "run"
    assert init["id"] == (tmp_path / "run" / "wandb_id.txt").read_text()  # a resumed run logs to the same W&B run
    assert calls[1:] == [("log", {"loss": 0.5}, 3), ("log", {"loss": ("image", str(tmp_path / "loss.png"))}, 3), ("finish",)]
    # auto: offline without an API key or without the server; online with both.
    assert wandb_mode("auto", {"NETRC": str(tmp_path / "none")}) == "offline"
    assert wandb_mode("auto", {"WANDB_API_KEY": "k"}, reachable=lambda host, port: False) == "offline"
    assert wandb_mode("auto", {"WANDB_API_KEY": "k"}, reachable=lambda host, port: True) == "online"
    assert wandb_mode("online", {}) == "online"
