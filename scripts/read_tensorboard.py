"""Read a run folder's event files with TensorBoard's own reader and print them as JSON.

Usage: read_tensorboard.py DIR

Prints {"scalars": {tag: [[step, value], ...]}, "text": {tag: [[step, text], ...]},
"hparams": {name: value}, "metrics": [tag, ...]}. Every events.out.tfevents.* file in DIR is
read in name order, as TensorBoard would, and must frame cleanly to its end: a bad CRC or a
truncated record fails this script (TensorBoard itself would silently stop reading there).
Used by tests/tensorboard.rs to check runner's writer against TensorBoard.
"""

import json
import sys
from pathlib import Path

from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import PyRecordReader_New
from tensorboard.compat.tensorflow_stub import errors
from tensorboard.plugins.hparams import plugin_data_pb2
from tensorboard.util import tensor_util


def count_records(path):
    """Number of TFRecord records in `path`; raises on a bad CRC or a truncated record."""
    reader = PyRecordReader_New(str(path))
    count = 0
    while True:
        try:
            reader.GetNext()
        except errors.OutOfRangeError:
            return count
        count += 1


def read_run(run_dir):
    out = {"scalars": {}, "text": {}, "hparams": {}, "metrics": []}
    for path in sorted(Path(run_dir).glob("events.out.tfevents.*")):
        records = count_records(path)
        events = 0
        plugin_of_tag = {}  # metadata comes with a tag's first value only
        # EventFileLoader is what TensorBoard loads with: it turns simple_value scalars into
        # scalar-plugin tensors.
        for event in EventFileLoader(str(path)).Load():
            events += 1
            for value in event.summary.value:
                if value.HasField("metadata"):
                    plugin_of_tag.setdefault(value.tag, value.metadata.plugin_data.plugin_name)
                plugin = plugin_of_tag.get(value.tag)
                if plugin == "scalars":
                    number = tensor_util.make_ndarray(value.tensor).item()
                    out["scalars"].setdefault(value.tag, []).append([event.step, number])
                elif plugin == "text":
                    text = value.tensor.string_val[0].decode("utf-8")
                    out["text"].setdefault(value.tag, []).append([event.step, text])
                elif plugin == "hparams":
                    read_hparams(value.metadata.plugin_data.content, out)
        if events != records:
            sys.exit(f"{path}: {records} records but the loader yielded {events} events")
    return out


def read_hparams(content, out):
    data = plugin_data_pb2.HParamsPluginData.FromString(content)
    kind = data.WhichOneof("data")
    if kind == "experiment":
        out["metrics"] += [m.name.tag for m in data.experiment.metric_infos]
    elif kind == "session_start_info":
        for name, value in data.session_start_info.hparams.items():
            out["hparams"][name] = getattr(value, value.WhichOneof("kind"))


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    json.dump(read_run(sys.argv[1]), sys.stdout)
    print()
