// Apicurio Registry's own Java Avro serdes (io.apicurio:apicurio-registry-avro-serde-kafka, from
// Maven Central) as a peer of streamkit's Avro codec: run as a single-file program by
// tests/test_registry_java.py, with the serde jars on the classpath.
//
//   java -cp 'lib/*' JavaApicurioAvro.java REGISTRY_V3_URL TOPIC N  < hex frames, one a line
//
// prints each value the deserializer reads from stdin's frames (GenericRecord.toString():
// JSON), a line "--", then N frames (hex) of Reading{sensor: "s<i>", value: i / 4.0} written
// by the serializer, which registers the schema under TOPIC-value (4-byte content ids).

import io.apicurio.registry.serde.avro.AvroKafkaDeserializer;
import io.apicurio.registry.serde.avro.AvroKafkaSerializer;
import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.util.HexFormat;
import java.util.Map;
import org.apache.avro.Schema;
import org.apache.avro.generic.GenericData;
import org.apache.avro.generic.GenericRecord;

public class JavaApicurioAvro {
    static final String READING = "{\"type\":\"record\",\"name\":\"Reading\",\"fields\":["
            + "{\"name\":\"sensor\",\"type\":\"string\"},{\"name\":\"value\",\"type\":\"double\"}]}";

    public static void main(String[] args) throws Exception {
        String url = args[0], topic = args[1];
        int count = Integer.parseInt(args[2]);
        Map<String, Object> config = Map.of(
                "apicurio.registry.url", url,
                "apicurio.registry.auto-register", "true");
        HexFormat hex = HexFormat.of();
        try (AvroKafkaDeserializer<Object> deserializer = new AvroKafkaDeserializer<>()) {
            deserializer.configure(config, false);
            BufferedReader in = new BufferedReader(new InputStreamReader(System.in));
            for (String line = in.readLine(); line != null; line = in.readLine()) {
                System.out.println(deserializer.deserialize(topic, hex.parseHex(line.strip())));
            }
        }
        System.out.println("--");
        Schema schema = new Schema.Parser().parse(READING);
        try (AvroKafkaSerializer<GenericRecord> serializer = new AvroKafkaSerializer<>()) {
            serializer.configure(config, false);
            for (int i = 0; i < count; i++) {
                GenericRecord reading = new GenericData.Record(schema);
                reading.put("sensor", "s" + i);
                reading.put("value", i / 4.0);
                System.out.println(hex.formatHex(serializer.serialize(topic, reading)));
            }
        }
    }
}
