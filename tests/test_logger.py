"""The logger: scalars to JSONL and CSV, media into the run folder, nothing overwritten."""
import numpy as np

from lab.logger import Logger, read_metrics
from lab.media import Image
from lab.rundir import RunDir


def test_scalars_go_to_jsonl_and_csv_and_media_are_never_overwritten(tmp_path):
    run = RunDir.create(tmp_path / "run", {"algo": "toy", "config": {}})
    logger = Logger(run, total_steps=10, progress=False)
    logger.log(5, {"train/loss": 1.5})
    logger.log(10, {"train/loss": 0.5, "eval/mse": 0.25})
    first = logger.log(10, {"samples/grid": Image(np.zeros((4, 4)))})
    second = logger.log(10, {"samples/grid": Image(np.ones((4, 4)))})
    logger.close()
    assert [r["step"] for r in read_metrics(run.metrics_file)] == [5, 10]
    header, *rows = (run.path / "metrics.csv").read_text().splitlines()
    assert header == "step,train/loss,eval/mse" and rows[1] == "10,0.5,0.25"
    assert first[0] != second[0] and first[0].exists() and second[0].exists()
    assert first[0].parent == run.path / "samples"
