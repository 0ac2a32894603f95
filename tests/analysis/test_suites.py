"""Suite scoring against an independent recomputation: targets, time-to-target, profiles and scores on fixed data."""

import numpy as np

from analysis import suites

TAU_MAX = 4.0


def test_profile_and_score_equal_a_numeric_integration_of_the_dolan_more_definition():
    inf = np.inf
    # 3 optimizers × 5 workloads; workload 4 nobody reaches; workload 3 a tie at 0
    times = np.array(
        [
            [10.0, 4.0, inf, 0.0, inf],
            [20.0, 2.0, 30.0, 0.0, inf],
            [50.0, 8.0, 10.0, 5.0, inf],
        ]
    )
    grid = np.linspace(1.0, TAU_MAX, 300_001)
    expected_ratio = np.array([[1.0, 2.0, inf, 1.0, inf], [2.0, 1.0, 3.0, 1.0, inf], [5.0, 4.0, 1.0, inf, inf]])
    assert np.array_equal(suites.ratios(times), expected_ratio)
    rho = np.array([[(expected_ratio[o] <= t).sum() / 5 for t in grid] for o in range(3)])
    area = np.trapezoid(rho, grid, axis=1) / (TAU_MAX - 1)
    np.testing.assert_allclose(suites.scores(times, TAU_MAX), area, atol=1e-4)
    np.testing.assert_array_equal(suites.profile(times, grid[::1000]), rho[:, ::1000])
    corners = suites.profile_steps(times, TAU_MAX)[1]
    assert corners == [(1.0, 0.4), (2.0, 0.6), (3.0, 0.8), (4.0, 0.8)]


def test_target_is_the_best_value_a_baseline_reaches_on_every_seed_and_time_to_target_is_a_median():
    # runs: 0,1 baseline A (seeds 0,1); 2,3 baseline B; 4,5,6 candidate C (seeds 0,1,2); 7 a rerun of C seed 0
    curves = {
        0: [1.0, 0.5, 0.3, 0.2],
        1: [1.0, 0.6, 0.4, 0.35],
        2: [1.0, 0.8, 0.7, 0.1],
        3: [1.0, 0.9, 0.5, 0.5],
        4: [1.0, 0.3, 0.2, 0.2],
        5: [1.0, 0.9, 0.9, 0.9],
        6: [1.0, 0.35, 0.3, 0.3],
        7: [1.0, 1.0, 1.0, 1.0],
    }
    keys = ["A", "A", "B", "B", "C", "C", "C", "C"]
    seeds = [0, 1, 0, 1, 0, 1, 2, 0]
    run = np.repeat(np.arange(8), 4)
    step = np.tile([0, 10, 20, 30], 8)
    time_s = step * 0.5 + run * 0.01
    value = np.concatenate([curves[r] for r in range(8)])
    evals = suites.Evaluations(run, step, time_s, value, keys, seeds)
    # within 30 steps: A's bests 0.2, 0.35 (worst 0.35), B's 0.1, 0.5 (worst 0.5): the target is 0.35
    assert suites.target(evals, ["A", "B"], 30, 100.0) == 0.35
    # the budget cuts at step 20: A 0.3/0.4 -> 0.4; B 0.7/0.5 -> 0.7; target 0.4
    assert suites.target(evals, ["A", "B"], 20, 100.0) == 0.4
    reached = suites.time_to_target(evals, 0.35, 30, 100.0)
    assert reached["A"] == suites.Reached(
        steps=np.median([20, 30]), seconds=np.median([10.0, 15.01]), seeds=2, reached_seeds=2
    )
    assert reached["B"].steps == np.inf and reached["B"].reached_seeds == 1
    # C: seed 0 (run 4, not its rerun 7) at 10, seed 1 never, seed 2 at 10: median 10
    assert reached["C"] == suites.Reached(steps=10.0, seconds=np.median([5.04, np.inf, 5.06]), seeds=3, reached_seeds=2)
    assert suites.time_to_target(evals, None, 30, 100.0)["A"].steps == np.inf
    # seconds over the wall-clock budget do not count
    assert suites.time_to_target(evals, 0.35, 30, 14.0)["A"].reached_seeds == 1
