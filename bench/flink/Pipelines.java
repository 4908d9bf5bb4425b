// Pipelines A, B and C in Apache Flink 2.2 (DataStream API, Kafka connector 5.0), run as a local
// MiniCluster inside this JVM, for the peers benchmark (bench/compare.py, system "flink").
// Settings from the same BENCH_* variables as the other peers; BENCH_FLINK_PARALLELISM (default
// 2) is both the job's parallelism and the MiniCluster's task slots.
// A: purchases JSON -> keyBy user_id (Flink's own network shuffle, no Kafka topic) -> per-user
//    running sum in cents (ValueState) -> {"user_id", "total"} per event.
// B: the same, event time = record timestamp, watermarks 1 h behind the newest record (per input
//    partition, the minimum across them: B's 1 h grace) -> 60 s tumbling event-time windows per
//    user, CountTrigger.of(1) (one update per event; the window's state is dropped once the
//    watermark passes its end) -> {"user_id", "start", "count"}.
// C: clicks and purchases (one topic, "kind"), each kind keyed by user (a shuffle each) ->
//    KeyedStream.intervalJoin, between -10 and +10 minutes, both ends inclusive; the watermarks
//    are 1 h behind the newest record (C's 1 h grace: a record older than the watermark is
//    dropped, a buffered record is purged once the watermark passes it + 10 min) ->
//    {"click", "purchase"} per pair.
// Guarantees: exactly_once = EXACTLY_ONCE checkpoints + a transactional KafkaSink + the source
// reading read_committed; at_least_once = the same EXACTLY_ONCE checkpoints (keyed state is then
// restored consistently) with an AT_LEAST_ONCE sink (flushed at each checkpoint). The checkpoint
// interval is BENCH_COMMIT_INTERVAL; the source commits its offsets to BENCH_GROUP on each
// completed checkpoint. State: the heap backend, checkpoints to files under BENCH_STATE_DIR.
import java.lang.management.ManagementFactory;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.Map;
import java.util.Properties;
import java.util.concurrent.CountDownLatch;
import org.apache.flink.api.common.eventtime.WatermarkStrategy;
import org.apache.flink.api.common.functions.AggregateFunction;
import org.apache.flink.api.common.functions.OpenContext;
import org.apache.flink.api.common.serialization.SimpleStringSchema;
import org.apache.flink.api.common.state.ValueState;
import org.apache.flink.api.common.state.ValueStateDescriptor;
import org.apache.flink.api.common.typeinfo.TypeInformation;
import org.apache.flink.api.common.typeinfo.Types;
import org.apache.flink.api.java.tuple.Tuple2;
import org.apache.flink.configuration.CheckpointingOptions;
import org.apache.flink.configuration.Configuration;
import org.apache.flink.connector.base.DeliveryGuarantee;
import org.apache.flink.connector.kafka.sink.KafkaRecordSerializationSchema;
import org.apache.flink.connector.kafka.sink.KafkaSink;
import org.apache.flink.connector.kafka.source.KafkaSource;
import org.apache.flink.connector.kafka.source.enumerator.initializer.OffsetsInitializer;
import org.apache.flink.core.execution.CheckpointingMode;
import org.apache.flink.core.execution.JobClient;
import org.apache.flink.api.common.JobStatus;
import org.apache.flink.streaming.api.datastream.DataStream;
import org.apache.flink.streaming.api.datastream.KeyedStream;
import org.apache.flink.streaming.api.environment.StreamExecutionEnvironment;
import org.apache.flink.streaming.api.functions.KeyedProcessFunction;
import org.apache.flink.streaming.api.functions.co.ProcessJoinFunction;
import org.apache.flink.streaming.api.functions.windowing.ProcessWindowFunction;
import org.apache.flink.streaming.api.windowing.assigners.TumblingEventTimeWindows;
import org.apache.flink.streaming.api.windowing.triggers.CountTrigger;
import org.apache.flink.streaming.api.windowing.windows.TimeWindow;
import org.apache.flink.util.Collector;
import org.apache.kafka.clients.producer.ProducerRecord;

public class Pipelines {
    static final TypeInformation<Tuple2<String, String>> KEYED_JSON =
        Types.TUPLE(Types.STRING, Types.STRING);
    static final TypeInformation<Tuple2<String, Long>> USER_LONG =
        Types.TUPLE(Types.STRING, Types.LONG);

    // The generator's fixed shape: {"user_id":"u123","amount":12.34,...} (as the Kafka Streams peer)
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

    /** A: the running sum of a user's amounts, in cents (exact), one output per event. */
    public static class RunningSum
            extends KeyedProcessFunction<String, Tuple2<String, Long>, Tuple2<String, String>> {
        private transient ValueState<Long> cents;

        @Override
        public void open(OpenContext context) {
            cents = getRuntimeContext().getState(new ValueStateDescriptor<>("cents", Types.LONG));
        }

        @Override
        public void processElement(Tuple2<String, Long> purchase, Context ctx,
                Collector<Tuple2<String, String>> out) throws Exception {
            Long before = cents.value();
            long total = (before == null ? 0L : before) + purchase.f1;
            cents.update(total);
            out.collect(Tuple2.of(purchase.f0,
                "{\"user_id\":\"" + purchase.f0 + "\",\"total\":" + (total / 100.0) + "}"));
        }
    }

    /** B: a window's count. */
    public static class Count implements AggregateFunction<String, Long, Long> {
        public Long createAccumulator() { return 0L; }
        public Long add(String user, Long count) { return count + 1; }
        public Long getResult(Long count) { return count; }
        public Long merge(Long a, Long b) { return a + b; }
    }

    /** B: one update per event, naming the window by its start (ms). */
    public static class Update
            extends ProcessWindowFunction<Long, Tuple2<String, String>, String, TimeWindow> {
        @Override
        public void process(String user, Context ctx, Iterable<Long> counts,
                Collector<Tuple2<String, String>> out) {
            long count = counts.iterator().next();
            out.collect(Tuple2.of(user, "{\"user_id\":\"" + user + "\",\"start\":"
                + ctx.window().getStart() + ",\"count\":" + count + "}"));
        }
    }

    /** C: one output per (click, purchase) pair, emitted when the later one arrives. */
    public static class Pair
            extends ProcessJoinFunction<Tuple2<String, Long>, Tuple2<String, Long>, Tuple2<String, String>> {
        @Override
        public void processElement(Tuple2<String, Long> click, Tuple2<String, Long> purchase,
                Context ctx, Collector<Tuple2<String, String>> out) {
            out.collect(Tuple2.of(click.f0,
                "{\"click\":" + click.f1 + ",\"purchase\":" + purchase.f1 + "}"));
        }
    }

    static KeyedStream<Tuple2<String, Long>, String> kind(DataStream<String> events, String kind) {
        return events
            .filter(v -> field(v, "kind").equals(kind))
            .map(v -> Tuple2.of(field(v, "user_id"), Long.parseLong(field(v, "id"))))
            .returns(USER_LONG)
            .keyBy(t -> t.f0, Types.STRING);
    }

    public static void main(String[] args) throws Exception {
        Map<String, String> env = System.getenv();
        String pipeline = env.getOrDefault("BENCH_PIPELINE", "A");
        boolean exactlyOnce = env.get("BENCH_GUARANTEE").equals("exactly_once");
        int parallelism = Integer.parseInt(env.getOrDefault("BENCH_FLINK_PARALLELISM", "2"));
        long interval = (long) (Double.parseDouble(env.get("BENCH_COMMIT_INTERVAL")) * 1000);
        String group = env.get("BENCH_GROUP");

        Configuration conf = new Configuration();
        conf.set(CheckpointingOptions.CHECKPOINT_STORAGE, "filesystem");
        conf.set(CheckpointingOptions.CHECKPOINTS_DIRECTORY,
            "file://" + env.get("BENCH_STATE_DIR") + "/checkpoints");
        StreamExecutionEnvironment flink =
            StreamExecutionEnvironment.createLocalEnvironment(parallelism, conf);
        flink.enableCheckpointing(interval, CheckpointingMode.EXACTLY_ONCE);

        KafkaSource<String> source = KafkaSource.<String>builder()
            .setBootstrapServers(env.get("BENCH_BOOTSTRAP"))
            .setTopics(env.get("BENCH_INPUT"))
            .setGroupId(group)
            .setStartingOffsets(OffsetsInitializer.earliest())  // a fresh group per run
            .setValueOnlyDeserializer(new SimpleStringSchema())
            .setProperty("isolation.level", exactlyOnce ? "read_committed" : "read_uncommitted")
            .build();
        WatermarkStrategy<String> watermarks = pipeline.equals("A")
            ? WatermarkStrategy.noWatermarks()
            : WatermarkStrategy.forBoundedOutOfOrderness(Duration.ofHours(1));
        DataStream<String> events = flink.fromSource(source, watermarks, "input");

        DataStream<Tuple2<String, String>> results;
        if (pipeline.equals("A")) {
            results = events
                .map(v -> Tuple2.of(field(v, "user_id"),
                    Math.round(Double.parseDouble(field(v, "amount")) * 100)))
                .returns(USER_LONG)
                .keyBy(t -> t.f0, Types.STRING)
                .process(new RunningSum())
                .returns(KEYED_JSON);
        } else if (pipeline.equals("B")) {
            results = events
                .map(v -> field(v, "user_id"))
                .returns(Types.STRING)
                .keyBy(u -> u, Types.STRING)
                .window(TumblingEventTimeWindows.of(Duration.ofSeconds(60)))
                .trigger(CountTrigger.of(1))
                .aggregate(new Count(), new Update(), Types.LONG, Types.LONG, KEYED_JSON);
        } else {
            results = kind(events, "click")
                .intervalJoin(kind(events, "purchase"))
                .between(Duration.ofMinutes(-10), Duration.ofMinutes(10))
                .process(new Pair())
                .returns(KEYED_JSON);
        }

        String output = env.get("BENCH_OUTPUT");
        Properties producer = new Properties();
        producer.setProperty("transaction.timeout.ms", "600000");  // broker's max is 15 min
        results.sinkTo(KafkaSink.<Tuple2<String, String>>builder()
            .setBootstrapServers(env.get("BENCH_BOOTSTRAP"))
            .setRecordSerializer((KafkaRecordSerializationSchema<Tuple2<String, String>>)
                (kv, context, timestamp) -> new ProducerRecord<>(output, null, timestamp,
                    kv.f0.getBytes(StandardCharsets.UTF_8), kv.f1.getBytes(StandardCharsets.UTF_8)))
            .setDeliveryGuarantee(
                exactlyOnce ? DeliveryGuarantee.EXACTLY_ONCE : DeliveryGuarantee.AT_LEAST_ONCE)
            .setTransactionalIdPrefix(group)
            .setKafkaProducerConfig(producer)
            .build());

        JobClient job = flink.executeAsync("bench-" + pipeline);
        CountDownLatch done = new CountDownLatch(1);
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            job.cancel();
            done.countDown();
        }));
        while (job.getJobStatus().get() != JobStatus.RUNNING) Thread.sleep(20);
        long started = ManagementFactory.getRuntimeMXBean().getStartTime();
        System.out.printf("flink: job running %d ms after the JVM started (parallelism %d)%n",
            System.currentTimeMillis() - started, parallelism);
        System.out.flush();
        done.await();
    }
}
