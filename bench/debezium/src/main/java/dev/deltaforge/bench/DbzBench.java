package dev.deltaforge.bench;

import io.debezium.engine.ChangeEvent;
import io.debezium.engine.DebeziumEngine;
import io.debezium.engine.format.Json;
import java.io.BufferedWriter;
import java.io.FileOutputStream;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStreamWriter;
import java.lang.management.ManagementFactory;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.Properties;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.TimeUnit;
import javax.management.MBeanServer;
import javax.management.ObjectName;

/**
 * Debezium's embedded engine for bench/debezium.sh: runs the connector
 * configured by a properties file, writes each data change event's value
 * (JSON converter) as one line to a file — buffered, flushed and synced at
 * the end of each batch handed over by the engine, before the batch is
 * marked processed — and exits once N data events are written.
 *
 * <p>usage: {@code java -jar dbz-bench.jar CONFIG.properties N OUT.jsonl}
 *
 * <p>Prints one line to stdout:
 * {@code events=N engine_s=S first_event_s=F boot_s=B}, where S is the time
 * from the engine's start (just before it is handed to its thread, after the
 * JVM has booted and the engine is built) to the Nth event written and
 * synced, F the time from the engine's start to the first data event, and B
 * the time from the JVM's start to the engine's start.
 *
 * <p>N = 0 is the positioning run: no file is written; the program waits
 * until the connector's streaming phase is connected (its JMX
 * {@code Connected} attribute), gives it a moment, and stops the engine,
 * which stores its offsets (the binlog position where streaming started).
 *
 * <p>Data events are those with a value whose topic is neither the
 * schema-change topic (the topic prefix) nor a heartbeat topic; tombstones,
 * heartbeats and schema changes are passed over (and marked processed).
 */
public final class DbzBench {
    private DbzBench() {}

    public static void main(String[] args) {
        try {
            run(args);
        } catch (Throwable e) {
            e.printStackTrace();
        }
        // The engine's threads are not daemons: any way out ends here.
        System.exit(1);
    }

    private static void run(String[] args) throws Exception {
        if (args.length != 3) {
            System.err.println("usage: dbz-bench CONFIG.properties N OUT.jsonl");
            System.exit(2);
        }
        Properties props = new Properties();
        try (InputStream in = Files.newInputStream(Path.of(args[0]))) {
            props.load(in);
        }
        long want = Long.parseLong(args[1]);
        String prefix = props.getProperty("topic.prefix", "");
        Sink sink = new Sink(want, prefix, want == 0 ? null : Path.of(args[2]));

        ExecutorService executor = Executors.newSingleThreadExecutor();
        CountDownLatch finished = new CountDownLatch(1);
        String[] failure = new String[1];
        DebeziumEngine<ChangeEvent<String, String>> engine = DebeziumEngine.create(Json.class)
                .using(props)
                .notifying(sink)
                .using((success, message, error) -> {
                    if (!success) {
                        failure[0] = message + (error == null ? "" : ": " + error);
                    }
                    finished.countDown();
                })
                .build();
        long boot = System.currentTimeMillis() - ManagementFactory.getRuntimeMXBean().getStartTime();
        long start = System.nanoTime();
        executor.execute(engine);

        if (want == 0) {
            waitStreaming(finished);
        } else {
            while (!sink.done.await(100, TimeUnit.MILLISECONDS)) {
                if (finished.getCount() == 0) {
                    break;
                }
            }
        }
        boolean reached = want == 0 ? finished.getCount() > 0 : sink.done.getCount() == 0;
        try {
            engine.close();
        } catch (IllegalStateException alreadyStopped) {
            // the engine failed and shut itself down
        }
        executor.shutdown();
        executor.awaitTermination(60, TimeUnit.SECONDS);
        sink.close();
        if (!reached) {
            System.err.println("engine stopped early after " + sink.count + " data events"
                    + (failure[0] == null ? "" : ": " + failure[0]));
            System.exit(1);
        }
        if (want > 0) {
            System.out.printf("events=%d engine_s=%.3f first_event_s=%.3f boot_s=%.3f%n", sink.count,
                    (sink.lastAt - start) / 1e9, (sink.firstAt - start) / 1e9, boot / 1e3);
        }
        System.exit(0);
    }

    /** Waits until a Debezium streaming metrics MBean says it is connected. */
    private static void waitStreaming(CountDownLatch finished) throws Exception {
        MBeanServer server = ManagementFactory.getPlatformMBeanServer();
        ObjectName pattern = new ObjectName("debezium.*:type=connector-metrics,context=streaming,*");
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(120);
        while (System.nanoTime() < deadline && finished.getCount() > 0) {
            for (ObjectName name : server.queryNames(pattern, null)) {
                if (Boolean.TRUE.equals(server.getAttribute(name, "Connected"))) {
                    Thread.sleep(1000);
                    return;
                }
            }
            Thread.sleep(100);
        }
        throw new IllegalStateException("the connector's streaming did not connect");
    }

    /** Writes data events, counts them and signals the Nth. */
    private static final class Sink implements DebeziumEngine.ChangeConsumer<ChangeEvent<String, String>> {
        final CountDownLatch done = new CountDownLatch(1);
        final long want;
        final String prefix;
        final FileOutputStream file;
        final BufferedWriter out;
        long count;
        long firstAt;
        long lastAt;

        Sink(long want, String prefix, Path path) throws IOException {
            this.want = want;
            this.prefix = prefix;
            this.file = path == null ? null : new FileOutputStream(path.toFile());
            this.out = file == null ? null
                    : new BufferedWriter(new OutputStreamWriter(file, StandardCharsets.UTF_8), 1 << 20);
        }

        private boolean isData(ChangeEvent<String, String> e) {
            String topic = e.destination();
            return e.value() != null && topic != null && !topic.equals(prefix)
                    && !topic.startsWith("__debezium-heartbeat");
        }

        @Override
        public synchronized void handleBatch(List<ChangeEvent<String, String>> records,
                DebeziumEngine.RecordCommitter<ChangeEvent<String, String>> committer)
                throws InterruptedException {
            boolean wrote = false;
            try {
                for (ChangeEvent<String, String> e : records) {
                    if (out != null && count < want && isData(e)) {
                        if (count == 0) {
                            firstAt = System.nanoTime();
                        }
                        out.write(e.value());
                        out.write('\n');
                        count++;
                        wrote = true;
                    }
                }
                if (wrote) {
                    out.flush();
                    file.getFD().sync();
                }
            } catch (IOException err) {
                throw new IllegalStateException("writing the output file", err);
            }
            for (ChangeEvent<String, String> e : records) {
                committer.markProcessed(e);
            }
            committer.markBatchFinished();
            if (wrote && count >= want) {
                lastAt = System.nanoTime();
                done.countDown();
            }
        }

        synchronized void close() throws IOException {
            if (out != null) {
                out.close();
            }
        }
    }
}
