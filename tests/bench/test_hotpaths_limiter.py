"""bench.hotpaths.limiter's arithmetic: the limiter per request is the median of each repeat's on - off."""

from __future__ import annotations

from bench.hotpaths.limiter import summarise, table


def test_the_limiter_is_the_median_of_each_repeat_s_difference() -> None:
    requests = 100
    dumps = [
        ("detail off 0", 1_000_000_000),
        ("detail on 0", 1_010_000_000),  # +100 k per request
        ("detail off 1", 1_050_000_000),  # a slow repeat for both: the difference stays
        ("detail on 1", 1_059_000_000),  # +90 k
        ("detail off 2", 1_000_000_000),
        ("detail on 2", 1_012_000_000),  # +120 k
    ]
    row = summarise(dumps, requests)["detail"]
    assert row["limiter"] == 100_000
    assert row["limiter_range"] == [90_000, 120_000]
    assert row["off"] == 10_000_000 and row["on"] == 10_120_000 and row["repeats"] == 3
    assert "product detail | 10.000 | 10.120 | 100 (90 to 120) | -" in table({"detail": row})
    assert "to_redis" not in row  # no exact blocks in this run


def test_a_repeat_without_its_pair_is_left_out() -> None:
    dumps = [("cart off 0", 2_000), ("cart on 0", 2_300), ("cart off 1", 2_000)]
    assert summarise(dumps, 1)["cart"]["repeats"] == 1


def test_going_to_redis_is_the_median_of_each_repeat_s_exact_minus_leased() -> None:
    dumps = []
    for repeat, exact in enumerate((300_000, 500_000, 400_000)):  # over the leased block, per request
        dumps += [(f"cart off {repeat}", 10_000_000), (f"cart on {repeat}", 10_100_000)]
        dumps.append((f"cart exact {repeat}", 10_100_000 + exact))
    row = summarise(dumps, 1)["cart"]
    assert row["to_redis"] == 400_000 and row["to_redis_range"] == [300_000, 500_000]
    assert table({"cart": row}).endswith("| 100 (100 to 100) | 400 (300 to 500)")
