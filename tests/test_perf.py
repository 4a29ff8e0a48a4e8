from bench.perf.sasrec import replay


def test_replay_stops_where_a_smaller_patience_would_have():
    values = [0.1, None, 0.2, 0.19, 0.18, 0.25, 0.3]  # None: an epoch without validation
    curve = [{"epoch": e, "valid_NDCG@10": v} for e, v in enumerate(values, 1)]
    row = {"epochs": 7, "seconds": 70.0, "curve": curve, "valid_NDCG@10": 0.3}
    short = replay(row, 2)
    assert (short["epochs"], short["valid_NDCG@10"], short["seconds"]) == (5, 0.2, 50.0)
    assert replay(row, 3) == row


def test_dropout_benchmark_runs_and_reports_both_rates(monkeypatch, capsys):
    import sys

    from bench.perf import dropout

    monkeypatch.setattr(sys, "argv", ["dropout", "--repeats", "2", "--threads", "1"])
    dropout.main()
    out = capsys.readouterr().out
    assert out.count("faster; dropped") == 2


def test_curve_configurations_read_values_as_yaml():
    from bench.perf.calrec_curve import parse_set

    assert parse_set("lr=3.0e-4,user_pooling=items,head=true,train_layers=4") == {
        "lr": 3.0e-4, "user_pooling": "items", "head": True, "train_layers": 4}
    assert parse_set("") == {}
