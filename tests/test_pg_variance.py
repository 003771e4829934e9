"""The variance ordering the notes predict, on a small case of `lab bench pg-variance`."""
import json
from pathlib import Path


def test_baseline_lowers_variance_without_moving_the_mean(lab, tmp_path):
    out = tmp_path / "pg_variance.json"
    result = lab("bench", "pg-variance", "--train-steps", "0", "--batches", "30", "--episodes-per-batch", "4",
                 "--reference-episodes", "400", "--baseline-episodes", "150", "--out", out)
    assert result.returncode == 0, result.stderr
    assert out.with_suffix(".png").stat().st_size > 0
    rows = json.loads(out.read_text())["estimators"]
    variance = {name: row["variance"] for name, row in rows.items()}
    # R(tau) > reward-to-go > reward-to-go - baseline: each fix of the notes lowers the variance ...
    assert variance["R(tau)"] > variance["reward-to-go"] > variance["reward-to-go - baseline"]
    # ... and single estimates point closer to the true gradient
    cosine = {name: row["cosine_to_reference"] for name, row in rows.items()}
    assert cosine["R(tau)"] < cosine["reward-to-go"] < cosine["reward-to-go - baseline"]
    # the baseline leaves the mean where it was: the mean difference of the two estimators is within
    # sampling error (its squared size over its squared standard error is about 1 in expectation)
    assert json.loads(out.read_text())["baseline_mean_shift_over_its_standard_error_sq"] < 4.0


def test_without_out_the_committed_results_stay_as_they_are(lab, tmp_path, monkeypatch):
    committed = Path(__file__).resolve().parent.parent / "bench" / "results" / "pg_variance.json"
    before = committed.read_bytes()
    monkeypatch.setenv("LAB_RUNS_DIR", str(tmp_path))
    result = lab("bench", "pg-variance", "--train-steps", "0", "--batches", "2", "--episodes-per-batch", "2",
                 "--reference-episodes", "20", "--baseline-episodes", "10")
    assert result.returncode == 0, result.stderr
    written = list((tmp_path / "bench").glob("pg_variance-*.json"))
    assert len(written) == 1 and "estimators" in json.loads(written[0].read_text())
    assert committed.read_bytes() == before
