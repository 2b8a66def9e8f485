// A Java-client consumer for the live Kafka test: reads N records of a topic in a group, commits, exits.
// Run as a single-file source program: java -cp '<kafka libs>/*' JavaConsumer.java BOOTSTRAP TOPIC N GROUP
import java.time.Duration;
import java.util.List;
import java.util.Properties;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;

public class JavaConsumer {
    public static void main(String[] args) {
        Properties props = new Properties();
        props.put("bootstrap.servers", args[0]);
        props.put("client.id", "java-consumer");
        props.put("group.id", args[3]);
        props.put("auto.offset.reset", "earliest");
        props.put("enable.auto.commit", "false");
        props.put("key.deserializer", ByteArrayDeserializer.class.getName());
        props.put("value.deserializer", ByteArrayDeserializer.class.getName());
        int n = Integer.parseInt(args[2]);
        int got = 0;
        long deadline = System.currentTimeMillis() + 60_000;
        try (KafkaConsumer<byte[], byte[]> consumer = new KafkaConsumer<>(props)) {
            consumer.subscribe(List.of(args[1]));
            while (got < n && System.currentTimeMillis() < deadline) {
                got += consumer.poll(Duration.ofMillis(500)).count();
            }
            consumer.commitSync();
        }
        System.out.println("consumed " + got);
        System.exit(got == n ? 0 : 1);
    }
}
