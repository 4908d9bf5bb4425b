"""The peers benchmark's pipelines in each system it compares (one program per system).

Every program reads its settings from the environment: BENCH_PIPELINE (A, B or C),
BENCH_BOOTSTRAP, BENCH_INPUT, BENCH_OUTPUT, BENCH_GROUP, BENCH_GUARANTEE (exactly_once |
at_least_once), BENCH_COMMIT_INTERVAL (seconds), BENCH_STATE_DIR (one per process),
BENCH_WORKER (the process's index when a system runs as several, `streamkit x2`).
A: purchases JSON → repartition by user_id → per-user running sum in state →
`{"user_id", "total"}` per event, keyed by user. B: the same purchases, event time = record
timestamp → repartition by user_id → 60 s tumbling count per user, one update per
event, a 1 h grace (out-of-orderness) so that no system drops an event as late →
`{"user_id", "start" (ms), "count"}`. The raw loops (raw_aiokafka: one hop; raw_twohop: the
repartition hop too; both on raw_loop's relay) do A, at-least-once only; raw_twohop_rdkafka,
the two hops on librdkafka, does A under both guarantees, from our virtualenv. The Faust, Quix
Streams and one-hop confluent-kafka programs run in the bench virtualenv (`.venv-bench`).
"""
