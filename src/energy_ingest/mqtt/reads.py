"""Reading the broker's packets many at a time.

paho-mqtt reads one packet per readiness event, and each packet with two or three recv() calls (its
first byte, its length a byte at a time, then the rest). At thousands of messages a second that is a
turn of the event loop and a few system calls per message. `BulkReads` gives paho one large read per
readiness event and lets it take every packet in it before returning to the loop.

Why nothing is left waiting: the socket is read at most once per event, and every whole packet of that
read is taken before the loop gets its turn back. What can stay behind is the start of a packet whose
rest has not arrived, and its arrival is the next event. paho-mqtt is pinned below 3 (pyproject.toml);
tests/mqtt/test_reads.py covers packets split across reads and many in one read.
"""

from __future__ import annotations

from paho.mqtt.client import Client
from paho.mqtt.enums import MQTTErrorCode

READ_BYTES = 64 * 1024  # a few hundred small messages: the event loop gets a turn every few milliseconds


class BulkReads:
    """Install on a paho client before it connects (`BulkReads(client)`)."""

    def __init__(self, client: Client) -> None:
        self._client = client
        self._recv = client._sock_recv  # paho's own: turns TLS "want read" into BlockingIOError
        self._held = b""
        self._at = 0
        self._may_read = False
        # Instance attributes: aiomqtt's reader callback calls `loop_read`, paho's packet reader `_sock_recv`.
        client._sock_recv = self._sock_recv  # type: ignore[method-assign]
        client.loop_read = self.loop_read  # type: ignore[method-assign]

    def _sock_recv(self, bufsize: int) -> bytes:
        if self._at >= len(self._held):
            if not self._may_read:
                raise BlockingIOError
            self._may_read = False
            data = self._recv(READ_BYTES)
            if not data:
                return data  # the broker closed the connection
            self._held, self._at = data, 0
        chunk = self._held[self._at : self._at + bufsize]
        self._at += len(chunk)
        return chunk

    def loop_read(self, max_packets: int = 1) -> MQTTErrorCode:
        """paho's `loop_read`, taking every packet of one read whatever `max_packets` says."""
        client = self._client
        self._may_read = True
        while True:
            if client._sock is None:
                return MQTTErrorCode.MQTT_ERR_NO_CONN
            rc = client._packet_read()
            if rc == MQTTErrorCode.MQTT_ERR_AGAIN:
                return MQTTErrorCode.MQTT_ERR_SUCCESS
            if rc > 0:
                return client._loop_rc_handle(rc)
