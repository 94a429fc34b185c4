#!/usr/bin/env bash
# A single-node Apache Kafka broker (KRaft: broker and controller in one JVM) for the tests and demos.
#
#   scripts/kafka.sh fetch|start|stop|status|topic NAME [PARTITIONS]|bootstrap
#
# fetch      the broker's jars from Maven Central (scripts/kafka/pom.xml) into .cache/services/kafka/VERSION/lib/,
#            once; start does it when needed.
# start      formats the storage once (random cluster id), starts the broker in the background and waits until it
#            answers a metadata request; the last stdout line is the bootstrap address 127.0.0.1:PORT.
# stop       TERM, then KILL after KAFKA_STOP_TIMEOUT; removes the port's data dir and log unless KEEP_DATA=1.
# topic      creates a topic if it does not exist (replication factor 1; default 1 partition).
# bootstrap  prints 127.0.0.1:PORT.
#
# Environment: KAFKA_PORT (default 9092; the controller listens on KAFKA_CONTROLLER_PORT, default KAFKA_PORT+1),
# KAFKA_START_TIMEOUT (s, default 90), KAFKA_STOP_TIMEOUT (s, default 30), KAFKA_HEAP_OPTS (default -Xmx512m),
# KEEP_DATA, KAFKA_OWNER_PID (stop the broker, removing its data, once that process has exited: for test
# sessions that may be killed before their teardown), PYTHON (an interpreter with confluent-kafka, for the
# readiness probe; default .venv/bin/python; without it the probe runs a Java admin tool, which is slower).
# Per port: data in .cache/services/kafka/data-PORT/, pid and log in .cache/services/kafka/kafka-PORT.{pid,log}.
# Topics are never auto-created.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

# The newest 4.x whose broker, tools and every dependency resolve on this project's Maven registry.
KAFKA_VERSION=4.4.0
HOST=127.0.0.1
PORT=${KAFKA_PORT:-9092}
CONTROLLER_PORT=${KAFKA_CONTROLLER_PORT:-$((PORT + 1))}
BOOTSTRAP=$HOST:$PORT
BASE=$ROOT/.cache/services/kafka
LIB=$BASE/$KAFKA_VERSION/lib
DATA=$BASE/data-$PORT
PIDFILE=$BASE/kafka-$PORT.pid
LOG=$BASE/kafka-$PORT.log
START_TIMEOUT=${KAFKA_START_TIMEOUT:-90}
STOP_TIMEOUT=${KAFKA_STOP_TIMEOUT:-30}
HEAP_OPTS=${KAFKA_HEAP_OPTS:--Xmx512m}
PYTHON=${PYTHON:-.venv/bin/python}
LOG4J=$ROOT/scripts/kafka/log4j2.xml
# A class-data-sharing archive of the broker's classes, written when the first broker stops: later starts load
# classes from it and need about a third less CPU (measured here: 7.9-8.7 -> 4.6-6.4 CPU-seconds to ready).
# Written per port, promoted by the first stop.
CDS=$BASE/$KAFKA_VERSION/broker.jsa
CDS_NEW=$BASE/$KAFKA_VERSION/broker-$PORT.jsa.new

die() {
    echo "kafka.sh: $*" >&2
    exit 1
}

is_port() { [[ $1 =~ ^[0-9]+$ ]] && (($1 > 0 && $1 < 65536)); }
is_port "$PORT" || die "KAFKA_PORT must be a TCP port, got '$PORT'"
is_port "$CONTROLLER_PORT" || die "KAFKA_CONTROLLER_PORT must be a TCP port, got '$CONTROLLER_PORT'"
[[ $PORT != "$CONTROLLER_PORT" ]] || die "KAFKA_PORT and KAFKA_CONTROLLER_PORT must differ"

pid() { cat "$PIDFILE" 2>/dev/null || true; }
alive() {
    local p
    p=$(pid)
    # The pid file's process, still our broker (not a later process that got the same pid).
    [[ -n $p ]] && kill -0 "$p" 2>/dev/null && grep -qa 'kafka\.Kafka' "/proc/$p/cmdline" 2>/dev/null
}
# Something accepts TCP connections on the port (ours or another process).
listening() { (: <"/dev/tcp/$HOST/$1") 2>/dev/null; }

# A Kafka admin tool from the fetched jars, logging warnings to stderr only.
tool() {
    java -Xmx256m -XX:TieredStopAtLevel=1 -Dlog4j2.configurationFile="$LOG4J" \
        -Dkafka.log.level=WARN -Dkafka.log.target=SYSTEM_ERR -cp "$LIB/*" "$@"
}

have_python_client() { "$PYTHON" -c 'import confluent_kafka' >/dev/null 2>&1; }

# True when the broker answers a metadata request with itself in the broker list.
answers() {
    if [[ $PROBE == python ]]; then
        "$PYTHON" - "$BOOTSTRAP" >/dev/null 2>&1 <<'EOF'
import sys

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

client = AdminClient({"bootstrap.servers": sys.argv[1], "log_level": 0})
try:
    meta = client.list_topics(timeout=3)
except KafkaException:
    sys.exit(1)
sys.exit(0 if meta.brokers else 1)
EOF
    else
        tool org.apache.kafka.tools.TopicCommand --bootstrap-server "$BOOTSTRAP" --list >/dev/null 2>&1
    fi
}

fetch() {
    if [[ -f $LIB/.complete ]]; then
        echo "Kafka $KAFKA_VERSION jars already in ${LIB#"$ROOT"/}"
        return 0
    fi
    command -v mvn >/dev/null || die "mvn not found (Maven is needed to fetch the Kafka jars)"
    mkdir -p "$BASE/$KAFKA_VERSION"
    # Two starts at once (parallel test sessions) fetch once; a fetch cut short leaves no lib/ behind.
    exec 9>"$BASE/$KAFKA_VERSION/.fetch.lock"
    flock 9
    if [[ ! -f $LIB/.complete ]]; then
        local tmp="$BASE/$KAFKA_VERSION/lib.partial"
        rm -rf "$tmp" "$LIB" "$CDS"
        echo "fetching Kafka $KAFKA_VERSION jars with Maven into ${LIB#"$ROOT"/}" >&2
        if ! mvn -q -B -f scripts/kafka/pom.xml -Dkafka.version="$KAFKA_VERSION" dependency:copy-dependencies \
            -DincludeScope=runtime -DoutputDirectory="$tmp" >"$BASE/$KAFKA_VERSION/fetch.log" 2>&1; then
            die "cannot fetch the Kafka $KAFKA_VERSION jars with Maven; see ${BASE#"$ROOT"/}/$KAFKA_VERSION/fetch.log"
        fi
        [[ -f $tmp/kafka_2.13-$KAFKA_VERSION.jar ]] || die "Maven fetched no kafka_2.13-$KAFKA_VERSION.jar"
        touch "$tmp/.complete"
        mv "$tmp" "$LIB"
    fi
    flock -u 9
    echo "Kafka $KAFKA_VERSION jars in ${LIB#"$ROOT"/}"
}

write_config() {
    cat >"$DATA/server.properties" <<EOF
# Written by scripts/kafka.sh start; rewritten on every start.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@$HOST:$CONTROLLER_PORT
listeners=PLAINTEXT://$HOST:$PORT,CONTROLLER://$HOST:$CONTROLLER_PORT
advertised.listeners=PLAINTEXT://$HOST:$PORT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
log.dirs=$DATA/logs
auto.create.topics.enable=false
num.partitions=1
default.replication.factor=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=4
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
min.insync.replicas=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
num.network.threads=2
num.io.threads=4
log.segment.bytes=16777216
log.retention.hours=24
log.retention.check.interval.ms=60000
EOF
}

# Formats the storage on the first start of a port; the cluster id stays in the data dir.
format_storage() {
    [[ -f $DATA/logs/meta.properties ]] && return 0
    if [[ ! -s $DATA/cluster.id ]]; then
        # A Kafka Uuid: 16 random bytes, base64url without padding; like Kafka's own, never starting with '-'.
        local id=-
        while [[ $id == -* ]]; do
            id=$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n')
        done
        echo "$id" >"$DATA/cluster.id"
    fi
    if ! tool kafka.tools.StorageTool format --ignore-formatted --cluster-id="$(cat "$DATA/cluster.id")" \
        --config="$DATA/server.properties" >"$DATA/format.log" 2>&1; then
        die "cannot format the storage in ${DATA#"$ROOT"/}; see ${DATA#"$ROOT"/}/format.log"
    fi
}

start() {
    if alive; then
        PROBE=$(have_python_client && echo python || echo java)
        answers || die "a broker process (pid $(pid)) is running on port $PORT but does not answer; see ${LOG#"$ROOT"/}"
        echo "Kafka already running on $BOOTSTRAP (pid $(pid))"
        echo "$BOOTSTRAP"
        return 0
    fi
    rm -f "$PIDFILE"
    command -v java >/dev/null || die "java not found"
    listening "$PORT" && die "port $PORT on $HOST is taken by another process; set KAFKA_PORT"
    listening "$CONTROLLER_PORT" &&
        die "controller port $CONTROLLER_PORT on $HOST is taken by another process; set KAFKA_CONTROLLER_PORT"
    fetch >/dev/null
    PROBE=$(have_python_client && echo python || echo java)
    mkdir -p "$DATA"
    write_config
    format_storage
    local cds_opt=-XX:SharedArchiveFile=$CDS
    if [[ ! -f $CDS ]]; then
        rm -f "$CDS_NEW"
        cds_opt=-XX:ArchiveClassesAtExit=$CDS_NEW
    fi
    # setsid + nohup, streams away from the caller's pipes: a caller that captures output (subprocess.run) is
    # not kept waiting for the broker, and the caller's Ctrl-C does not reach it.
    # shellcheck disable=SC2086 # HEAP_OPTS is a list of JVM flags
    setsid nohup java $HEAP_OPTS "$cds_opt" -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -Djava.awt.headless=true \
        -Dlog4j2.configurationFile="$LOG4J" -cp "$LIB/*" kafka.Kafka "$DATA/server.properties" \
        </dev/null >"$LOG" 2>&1 &
    local broker=$!
    echo "$broker" >"$PIDFILE"
    local deadline=$((SECONDS + START_TIMEOUT))
    while ((SECONDS < deadline)); do
        # kill -0, not alive(): until the child has exec'd java its command line does not name kafka.Kafka yet.
        if ! kill -0 "$broker" 2>/dev/null; then
            rm -f "$PIDFILE"
            die "the broker exited while starting; see ${LOG#"$ROOT"/}"
        fi
        # The listener opens once start-up is done; probing only then keeps the probe's own Python (or JVM) start
        # from competing with the broker for CPU.
        if listening "$PORT" && answers; then
            [[ -n ${KAFKA_OWNER_PID:-} ]] && watch_owner "$KAFKA_OWNER_PID" "$(pid)"
            echo "Kafka $KAFKA_VERSION running on $BOOTSTRAP (pid $(pid), log ${LOG#"$ROOT"/})"
            echo "$BOOTSTRAP"
            return 0
        fi
        sleep 0.25
    done
    stop_pid >/dev/null
    die "the broker did not answer on $BOOTSTRAP within ${START_TIMEOUT}s; see ${LOG#"$ROOT"/}"
}

# In the background: once OWNER has exited while the broker (pid BROKER) still runs, `stop` it.
watch_owner() {
    [[ $1 =~ ^[0-9]+$ ]] || die "KAFKA_OWNER_PID must be a process id, got '$1'"
    KAFKA_PORT=$PORT KAFKA_CONTROLLER_PORT=$CONTROLLER_PORT KEEP_DATA=0 setsid nohup bash -c \
        'while kill -0 "$1" && kill -0 "$2"; do sleep 2; done 2>/dev/null; kill -0 "$2" 2>/dev/null && exec bash "$3" stop' \
        watch "$1" "$2" "$ROOT/scripts/kafka.sh" </dev/null >/dev/null 2>&1 &
}

# TERM, then KILL after STOP_TIMEOUT; forgets the pid file.
stop_pid() {
    local p
    p=$(pid)
    if alive; then
        kill "$p"
        # Writing the class archive on the first exit takes a while on a busy machine.
        local deadline=$((SECONDS + STOP_TIMEOUT))
        [[ -f $CDS ]] || deadline=$((deadline + 60))
        while kill -0 "$p" 2>/dev/null && ((SECONDS < deadline)); do
            sleep 0.2
        done
        if kill -0 "$p" 2>/dev/null; then
            echo "kafka.sh: the broker (pid $p) did not stop within ${STOP_TIMEOUT}s; killing it" >&2
            kill -9 "$p" 2>/dev/null || true
            rm -f "$CDS_NEW" # possibly cut short
        fi
    fi
    rm -f "$PIDFILE"
    # The JVM wrote its class archive on exit; the first one complete becomes the shared one.
    if [[ -s $CDS_NEW && ! -f $CDS ]]; then
        mv "$CDS_NEW" "$CDS"
    fi
    rm -f "$CDS_NEW"
}

stop() {
    local was
    was=$(alive && echo running || echo "not running")
    stop_pid
    if [[ ${KEEP_DATA:-0} == 1 ]]; then
        echo "Kafka on port $PORT stopped (was $was); data kept in ${DATA#"$ROOT"/}, log in ${LOG#"$ROOT"/}"
    else
        rm -rf "$DATA" "$LOG"
        echo "Kafka on port $PORT stopped (was $was); data and log removed"
    fi
}

status() {
    if alive; then
        PROBE=$(have_python_client && echo python || echo java)
        if answers; then
            echo "Kafka running on $BOOTSTRAP (pid $(pid))"
            return 0
        fi
        echo "Kafka process $(pid) on port $PORT does not answer; see ${LOG#"$ROOT"/}"
        return 1
    fi
    echo "Kafka on port $PORT is not running"
    return 1
}

topic() {
    local name=${1:-} partitions=${2:-1}
    [[ $name =~ ^[A-Za-z0-9._-]{1,249}$ && $name != . && $name != .. ]] ||
        die "topic name must be 1-249 of [A-Za-z0-9._-], got '$name'"
    [[ $partitions =~ ^[1-9][0-9]*$ ]] || die "partitions must be a positive integer, got '$partitions'"
    alive || die "Kafka is not running on port $PORT (scripts/kafka.sh start)"
    [[ -f $LIB/.complete ]] || die "no Kafka jars in ${LIB#"$ROOT"/} (scripts/kafka.sh fetch)"
    local out
    if ! out=$(tool org.apache.kafka.tools.TopicCommand --bootstrap-server "$BOOTSTRAP" --create --if-not-exists \
        --topic "$name" --partitions "$partitions" --replication-factor 1 2>&1); then
        die "cannot create topic '$name' on $BOOTSTRAP: $(tail -n 1 <<<"$out")"
    fi
    if [[ $out == *"Created topic"* ]]; then
        echo "topic $name on $BOOTSTRAP: created with $partitions partition(s)"
        return 0
    fi
    # --if-not-exists leaves an existing topic as it is: report what there is.
    local have
    have=$(tool org.apache.kafka.tools.TopicCommand --bootstrap-server "$BOOTSTRAP" --describe --topic "$name" |
        sed -n 's/.*PartitionCount: *\([0-9]*\).*/\1/p' | head -n 1)
    [[ -n $have ]] || die "topic '$name' is not on $BOOTSTRAP after creating it"
    echo "topic $name on $BOOTSTRAP: already there with $have partition(s)"
}

case "${1:-}" in
    fetch | start | stop | status) "$1" ;;
    topic)
        shift
        topic "$@"
        ;;
    bootstrap) echo "$BOOTSTRAP" ;;
    *) die "usage: scripts/kafka.sh fetch|start|stop|status|topic NAME [PARTITIONS]|bootstrap  (env: KAFKA_PORT, ...)" ;;
esac
