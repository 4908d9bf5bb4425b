// Pipelines A and B in Kafka Streams 4.1 for the peers benchmark (BENCH_PIPELINE=A|B).
// A: purchases JSON -> repartition by user_id -> per-user running sum (state store, record
// cache off: one result per event) -> {"user_id", "total"} keyed by user.
// B: the same, event time = record timestamp -> 60 s tumbling count per user, 1 h grace, one
// update per event -> {"user_id", "start", "count"}.
// C: clicks and purchases (one topic, "kind"), each kind re-keyed by user (a repartition topic
// each) -> inner KStream-KStream join within 10 minutes either way, 1 h grace (with 10 min it
// drops a third of the pairs: its stream time is the newest record's, and after the repartition
// hop the source partitions interleave far out of order)
// (JoinWindows) -> {"click", "purchase"} per pair. Settings from the same BENCH_* variables.
import java.time.Duration;
import java.util.Map;
import java.util.Properties;
import java.util.concurrent.CountDownLatch;
import org.apache.kafka.common.serialization.Serdes;
import org.apache.kafka.common.utils.Bytes;
import org.apache.kafka.streams.KafkaStreams;
import org.apache.kafka.streams.KeyValue;
import org.apache.kafka.streams.StreamsBuilder;
import org.apache.kafka.streams.StreamsConfig;
import org.apache.kafka.streams.kstream.Consumed;
import org.apache.kafka.streams.kstream.Grouped;
import org.apache.kafka.streams.kstream.JoinWindows;
import org.apache.kafka.streams.kstream.Repartitioned;
import org.apache.kafka.streams.kstream.StreamJoined;
import org.apache.kafka.streams.kstream.Materialized;
import org.apache.kafka.streams.kstream.Produced;
import org.apache.kafka.streams.kstream.TimeWindows;
import org.apache.kafka.streams.state.WindowStore;
import org.apache.kafka.streams.state.KeyValueStore;

public class Pipelines {
    // The generator's fixed shape: {"user_id":"u123","amount":12.34,...}
    static String field(String json, String name) {
        int at = json.indexOf("\"" + name + "\":") + name.length() + 3;
        int end = at;
        if (json.charAt(at) == '"') {
            end = json.indexOf('"', at + 1);
            return json.substring(at + 1, end);
        }
        while (end < json.length() && ",}".indexOf(json.charAt(end)) < 0) end++;
        return json.substring(at, end);
    }

    public static void main(String[] args) throws Exception {
        Map<String, String> env = System.getenv();
        Properties props = new Properties();
        props.put(StreamsConfig.APPLICATION_ID_CONFIG, env.get("BENCH_GROUP"));
        props.put(StreamsConfig.BOOTSTRAP_SERVERS_CONFIG, env.get("BENCH_BOOTSTRAP"));
        props.put(StreamsConfig.PROCESSING_GUARANTEE_CONFIG,
            env.get("BENCH_GUARANTEE").equals("exactly_once")
                ? StreamsConfig.EXACTLY_ONCE_V2 : StreamsConfig.AT_LEAST_ONCE);
        props.put(StreamsConfig.COMMIT_INTERVAL_MS_CONFIG,
            (long) (Double.parseDouble(env.get("BENCH_COMMIT_INTERVAL")) * 1000));
        props.put(StreamsConfig.STATE_DIR_CONFIG, env.get("BENCH_STATE_DIR"));
        props.put(StreamsConfig.STATESTORE_CACHE_MAX_BYTES_CONFIG, 0);
        props.put(StreamsConfig.NUM_STREAM_THREADS_CONFIG,
            Integer.parseInt(env.getOrDefault("BENCH_THREADS", "1")));
        props.put(StreamsConfig.REPLICATION_FACTOR_CONFIG, 1);
        props.put("consumer.auto.offset.reset", "earliest");

        StreamsBuilder builder = new StreamsBuilder();
        if (env.getOrDefault("BENCH_PIPELINE", "A").equals("C")) {
            var events = builder
                .stream(env.get("BENCH_INPUT"), Consumed.with(Serdes.ByteArray(), Serdes.String()));
            var clicks = events
                .filter((k, v) -> field(v, "kind").equals("click"))
                .selectKey((k, v) -> field(v, "user_id"))
                .repartition(Repartitioned.with(Serdes.String(), Serdes.String()).withName("clicks"));
            var bought = events
                .filter((k, v) -> field(v, "kind").equals("purchase"))
                .selectKey((k, v) -> field(v, "user_id"))
                .repartition(Repartitioned.with(Serdes.String(), Serdes.String()).withName("bought"));
            clicks
                .join(bought,
                    (c, p) -> "{\"click\":" + field(c, "id") + ",\"purchase\":" + field(p, "id") + "}",
                    JoinWindows.ofTimeDifferenceAndGrace(Duration.ofMinutes(10), Duration.ofHours(1)),
                    StreamJoined.with(Serdes.String(), Serdes.String(), Serdes.String())
                        .withName("clicks-purchases").withStoreName("clicks-purchases"))
                .to(env.get("BENCH_OUTPUT"), Produced.with(Serdes.String(), Serdes.String()));
            run(builder, props);
            return;
        }
        var byUser = builder
            .stream(env.get("BENCH_INPUT"), Consumed.with(Serdes.ByteArray(), Serdes.String()))
            .map((k, v) -> KeyValue.pair(field(v, "user_id"), v))
            .groupByKey(Grouped.with("by-user", Serdes.String(), Serdes.String()));
        if (env.getOrDefault("BENCH_PIPELINE", "A").equals("A")) {
            byUser
                .aggregate(() -> 0.0, (user, v, total) -> total + Double.parseDouble(field(v, "amount")),
                    Materialized.<String, Double, KeyValueStore<Bytes, byte[]>>as("totals")
                        .withKeySerde(Serdes.String()).withValueSerde(Serdes.Double())
                        .withCachingDisabled())
                .toStream()
                .mapValues((user, total) -> "{\"user_id\":\"" + user + "\",\"total\":" + total + "}")
                .to(env.get("BENCH_OUTPUT"), Produced.with(Serdes.String(), Serdes.String()));
        } else {
            byUser
                .windowedBy(TimeWindows.ofSizeAndGrace(Duration.ofSeconds(60), Duration.ofHours(1)))
                .count(Materialized.<String, Long, WindowStore<Bytes, byte[]>>as("counts")
                    .withKeySerde(Serdes.String()).withValueSerde(Serdes.Long())
                    .withCachingDisabled())
                .toStream()
                .map((w, count) -> KeyValue.pair(w.key(), "{\"user_id\":\"" + w.key()
                    + "\",\"start\":" + w.window().start() + ",\"count\":" + count + "}"))
                .to(env.get("BENCH_OUTPUT"), Produced.with(Serdes.String(), Serdes.String()));
        }

        run(builder, props);
    }

    static void run(StreamsBuilder builder, Properties props) throws Exception {
        String every = System.getenv("BENCH_METRICS_EVERY_MS");  // bench.partitions' paced runs
        KafkaStreams streams = new KafkaStreams(builder.build(), props);
        if (every != null) {
            streams.setStateListener((now, before) -> System.out.println("STATE " + now));
            reportCommits(streams, Long.parseLong(every));
        }
        CountDownLatch done = new CountDownLatch(1);
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            streams.close(Duration.ofSeconds(20));
            done.countDown();
        }));
        streams.start();
        done.await();
    }

    // Every `everyMs`, on stdout: "COMMITS <commits> <send-offsets ns> <commit ns>", all
    // totals so far: the stream thread's commits (each commits every task with new records)
    // and its transactional producer's time in sendOffsetsToTransaction and commitTransaction
    // (which flushes the batches first). (Its commit-latency-* metrics are per task: the
    // commit's time divided by the tasks it committed.)
    static void reportCommits(KafkaStreams streams, long everyMs) {
        Thread reporter = new Thread(() -> {
            while (true) {
                try {
                    Thread.sleep(everyMs);
                } catch (InterruptedException e) {
                    return;
                }
                double commits = 0, offsetsNs = 0, commitNs = 0;
                for (var e : streams.metrics().entrySet()) {
                    if (!(e.getValue().metricValue() instanceof Number n)) continue;
                    String group = e.getKey().group(), name = e.getKey().name();
                    if (group.equals("stream-thread-metrics") && name.equals("commit-total")) {
                        commits += n.doubleValue();
                    } else if (group.equals("producer-metrics")
                            && name.equals("txn-send-offsets-time-ns-total")) {
                        offsetsNs += n.doubleValue();
                    } else if (group.equals("producer-metrics")
                            && name.equals("txn-commit-time-ns-total")) {
                        commitNs += n.doubleValue();
                    }
                }
                System.out.println(
                    "COMMITS " + (long) commits + " " + (long) offsetsNs + " " + (long) commitNs);
            }
        });
        reporter.setDaemon(true);
        reporter.start();
    }
}
