// A Java-client producer for the live Kafka test: sends N records of `size` bytes and waits for every ack.
// Run as a single-file source program: java -cp '<kafka libs>/*' JavaProducer.java BOOTSTRAP TOPIC N SIZE
import java.util.Properties;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.serialization.ByteArraySerializer;

public class JavaProducer {
    public static void main(String[] args) throws Exception {
        Properties props = new Properties();
        props.put("bootstrap.servers", args[0]);
        props.put("client.id", "java-perf");
        props.put("acks", "1");
        props.put("linger.ms", "5");
        props.put("key.serializer", ByteArraySerializer.class.getName());
        props.put("value.serializer", ByteArraySerializer.class.getName());
        int n = Integer.parseInt(args[2]);
        byte[] value = new byte[Integer.parseInt(args[3])];
        try (KafkaProducer<byte[], byte[]> producer = new KafkaProducer<>(props)) {
            for (int i = 0; i < n; i++) {
                producer.send(new ProducerRecord<>(args[1], value));
            }
            producer.flush();
        }
        System.out.println("sent " + n);
    }
}
