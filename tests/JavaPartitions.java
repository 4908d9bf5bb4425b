// Prints "<key> <partition>" the way Kafka's Java producer partitions a keyed record:
// Utils.toPositive(Utils.murmur2(keyBytes)) % numPartitions. Run with the broker's jars:
//   java -cp '<lib>/*' tests/JavaPartitions.java <numPartitions> <key>...
import org.apache.kafka.common.utils.Utils;
import java.nio.charset.StandardCharsets;

public class JavaPartitions {
    public static void main(String[] args) {
        int n = Integer.parseInt(args[0]);
        for (int i = 1; i < args.length; i++) {
            byte[] key = args[i].getBytes(StandardCharsets.UTF_8);
            System.out.println(args[i] + " " + Utils.toPositive(Utils.murmur2(key)) % n);
        }
    }
}
