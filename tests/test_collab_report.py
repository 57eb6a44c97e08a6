"""Run outputs and the comparison summary (no training: hand-made results)."""

from __future__ import annotations

import json
import math

import pytest

from training.collab_report import format_summary, mean_std, summarize, write_run


def _dml(world: int, finals: list[tuple[float, float, float, float]]) -> dict:
    history = [
        {
            "epoch": i + 1,
            "peer_acc": [a] * world,
            "mean_peer_acc": a,
            "ensemble_acc": e,
            "fused_acc": e,
            "disagreement": d,
            "pairwise_kl": k,
        }
        for i, (a, e, d, k) in enumerate(finals)
    ]
    return {"mode": "dml", "world_size": world, "peers": ["mlp784"] * world, "history": history,
            "final": dict(history[-1], fusion="ensemble")}  # fmt: skip


def _fed(accs: list[float], target: int | None) -> dict:
    history = [
        {"round": i + 1, "global_acc": a, "fused_acc": a, "mean_client_acc": a - 0.1, "disagreement": 0.5,
         "pairwise_kl": 0.1, "clients": [0, 1], "client_acc": [a, a], "train_loss": 1.0}
        for i, a in enumerate(accs)
    ]  # fmt: skip
    return {"mode": "fedavg", "world_size": 2, "peers": ["mlp784"], "history": history,
            "final": dict(history[-1], fusion="average"), "round_to_target": target}  # fmt: skip


def test_mean_std_by_hand():
    assert mean_std([1.0, 2.0, 3.0, 4.0]) == (2.5, pytest.approx(math.sqrt(5 / 3)))
    assert mean_std([0.7]) == (0.7, 0.0)


def test_summarize_by_hand():
    arms = {
        "dml": [
            _dml(
                2,
                [(0.5, 0.6, 0.4, 0.3), (0.8, 0.9, 0.1, 0.2), (0.9, 0.92, 0.05, 0.1), (0.9, 0.95, 0.03, 0.05)],
            ),
            _dml(
                2,
                [(0.5, 0.6, 0.4, 0.3), (0.8, 0.9, 0.1, 0.2), (0.9, 0.92, 0.05, 0.1), (0.8, 0.80, 0.09, 0.07)],
            ),
        ],
        "fedavg-iid": [_fed([0.5, 0.7, 0.9], 2), _fed([0.4, 0.6, 0.8], None)],
    }
    table = summarize(arms, at_round=2)
    d = table["dml"]
    assert d["mean_peer_acc"]["mean"] == pytest.approx(0.85)
    assert d["mean_peer_acc"]["std"] == pytest.approx(math.sqrt(2 * 0.05**2))
    assert d["ensemble_gain"]["values"] == pytest.approx([0.05, 0.0])
    assert d["disagreement_last3"]["values"] == pytest.approx(
        [(0.1 + 0.05 + 0.03) / 3, (0.1 + 0.05 + 0.09) / 3]
    )
    f = table["fedavg-iid"]
    assert f["acc"]["mean"] == pytest.approx(0.85)
    assert f["acc@2"]["values"] == pytest.approx([0.7, 0.6])
    # A seed that never reached the target is listed as nan and left out of the mean.
    assert f["round_to_target"]["mean"] == 2.0 and f["round_to_target"]["n_finite"] == 1
    text = format_summary(table)
    assert "fedavg-iid" in text and "nan" in text


def test_centralized_arm_reports_single_accuracy():
    table = summarize({"centralized": [_dml(1, [(0.9, 0.9, 0.0, 0.0)])]})
    assert list(table["centralized"]) == ["acc"]


def test_write_run_outputs(tmp_path):
    result = {**_fed([0.5, 0.7], 2), "state": {"not": "written"}}
    paths = write_run(tmp_path / "run", result, {"config": {"x": 1}})
    doc = json.loads((tmp_path / "run" / "result.json").read_text())
    assert "state" not in doc and doc["config"] == {"x": 1} and doc["round_to_target"] == 2
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["round"] for x in lines] == [1, 2]
    pngs = [p for p in paths if p.suffix == ".png"]
    assert len(pngs) == 2 and all(p.read_bytes()[:4] == b"\x89PNG" for p in pngs)
    write_run(tmp_path / "dml", _dml(2, [(0.5, 0.6, 0.4, 0.3)]))
    assert (tmp_path / "dml" / "accuracy.png").exists()
