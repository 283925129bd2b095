"""A Tasmota device simulator: HTTP `/cm?cmnd=` and MQTT (`cmnd/<topic>/...` in, `stat/<topic>/...` out)
for the Power<n> and PulseTime<n> commands as the Tasmota docs describe them. Tests only."""

from __future__ import annotations

import json
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import paho.mqtt.client as paho

from app.control.relays.tasmota import pulse_seconds
from tests.sim_switch import SimSwitch


class TasmotaSim:
    """A Tasmota with `relays` outputs; HTTP on 127.0.0.1 (ephemeral port) and/or MQTT on a broker."""

    def __init__(self, relays: int = 1, password: str = "", topic: str = "", broker: tuple[str, int] | None = None,
                 http: bool = True) -> None:
        self.password = password
        self.topic = topic
        self.pulse = [0] * relays
        self.commands: list[str] = []
        self.client: paho.Client | None = None
        self.switches = [SimSwitch(on_change=self._announcer(i + 1)) for i in range(relays)]
        self.server: ThreadingHTTPServer | None = None
        self.port = 0
        if http:
            self._start_http()
        if broker is not None:
            self._start_mqtt(*broker)

    @property
    def host(self) -> str:
        """`host` for the relay config."""
        return f"127.0.0.1:{self.port}"

    def _power_key(self, n: int) -> str:
        return "POWER" if len(self.switches) == 1 else f"POWER{n}"

    def command(self, text: str) -> dict[str, Any]:
        """Execute one command line (`Power1 ON`, `PulseTime1 220`, `Power`) -> Tasmota's JSON reply."""
        self.commands.append(text)
        word, _, arg = text.strip().partition(" ")
        low = word.lower()
        arg = arg.strip()
        for name in ("power", "pulsetime"):
            if low.startswith(name):
                num = low[len(name):] or "1"
                if not num.isdigit() or not 1 <= int(num) <= len(self.switches):
                    return {"Command": "Unknown"}
                n = int(num)
                return self._power(n, arg) if name == "power" else self._pulse(n, arg)
        return {"Command": "Unknown"}

    def _power(self, n: int, arg: str) -> dict[str, Any]:
        sw = self.switches[n - 1]
        a = arg.upper()
        if a in ("ON", "1", "TRUE"):
            sw.set(True, pulse_seconds(self.pulse[n - 1]) if self.pulse[n - 1] else None, "command")
        elif a in ("OFF", "0", "FALSE"):
            sw.set(False, None, "command")
        elif a in ("TOGGLE", "2"):
            on = not sw.state()
            sw.set(on, pulse_seconds(self.pulse[n - 1]) if on and self.pulse[n - 1] else None, "command")
        elif a:
            return {"Command": "Error"}
        return {self._power_key(n): "ON" if sw.state() else "OFF"}

    def _pulse(self, n: int, arg: str) -> dict[str, Any]:
        if arg:
            if not arg.isdigit() or int(arg) > 64900:
                return {"Command": "Error"}
            self.pulse[n - 1] = int(arg)
        sw = self.switches[n - 1]
        with sw.lock:
            left = 0.0 if sw.deadline is None else max(0.0, sw.deadline - time.monotonic())
        remaining = round(left * 10) if left <= 11.1 else round(left) + 100
        return {f"PulseTime{n}": {"Set": self.pulse[n - 1], "Remaining": remaining}}

    # ------------------------------------------------------------ HTTP

    def _start_http(self) -> None:
        sim = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                url = urllib.parse.urlsplit(self.path)
                q = {k: v[-1] for k, v in urllib.parse.parse_qs(url.query).items()}
                if url.path != "/cm":
                    body: dict[str, Any] = {"Command": "Unknown"}
                elif sim.password and (q.get("user") != "admin" or q.get("password") != sim.password):
                    body = {"WARNING": "Need user=<username>&password=<password>"}
                else:
                    body = sim.command(q.get("cmnd", ""))
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    # ------------------------------------------------------------ MQTT

    def _start_mqtt(self, host: str, port: int) -> None:
        ready = threading.Event()
        client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=f"sim-{self.topic}")

        def on_connect(c: Any, u: Any, f: Any, rc: Any, p: Any = None) -> None:
            c.subscribe(f"cmnd/{self.topic}/#", qos=1)

        def on_subscribe(*args: Any) -> None:
            ready.set()

        def on_message(c: Any, u: Any, msg: Any) -> None:
            word = msg.topic.rsplit("/", 1)[1]
            reply = self.command(f"{word} {msg.payload.decode()}".strip())
            c.publish(f"stat/{self.topic}/RESULT", json.dumps(reply), qos=1)
            if word.lower().startswith("power"):
                for key, value in reply.items():
                    if key.startswith("POWER"):
                        c.publish(f"stat/{self.topic}/{key}", value, qos=1)

        client.on_connect = on_connect
        client.on_subscribe = on_subscribe
        client.on_message = on_message
        client.connect(host, port)
        client.loop_start()
        if not ready.wait(10):
            raise RuntimeError("the Tasmota simulator could not subscribe")
        self.client = client

    def _announcer(self, n: int) -> Any:
        def announce(on: bool, source: str) -> None:
            if self.client is not None and source in ("timer", "button"):  # Tasmota tells the broker itself
                key = "POWER" if len(self.pulse) == 1 else f"POWER{n}"
                self.client.publish(f"stat/{self.topic}/RESULT", json.dumps({key: "ON" if on else "OFF"}), qos=1)
                self.client.publish(f"stat/{self.topic}/{key}", "ON" if on else "OFF", qos=1)

        return announce

    def close(self) -> None:
        """Stop HTTP, MQTT and the timers."""
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
        if self.client is not None:
            self.client.disconnect()
            self.client.loop_stop()
        for s in self.switches:
            s.stop()
