"""Pipeline A in each system the peers benchmark compares (one program per system).

Every program reads its settings from the environment: BENCH_BOOTSTRAP, BENCH_INPUT,
BENCH_OUTPUT, BENCH_GROUP, BENCH_GUARANTEE (exactly_once | at_least_once),
BENCH_COMMIT_INTERVAL (seconds), BENCH_STATE_DIR. Pipeline A: purchases JSON → repartition by
user_id → per-user running sum in state → `{"user_id", "total"}` per event, keyed by user.
The Faust and Quix Streams programs run in the bench virtualenv (`.venv-bench`), not ours.
"""
