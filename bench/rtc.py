"""A Realtime WebRTC caller for the voice benchmarks, built on aiortc.

It does what the browser does: a microphone track, the `oai-events` data channel, an
SDP offer posted to `/realtime/calls` with an ephemeral key. Every server event is
kept with the time it arrived, and the microphone notes when it played the last
sample of each utterance, so latencies are measured on one clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import json
import time
from dataclasses import dataclass
from typing import Any

import av
import httpx
import numpy as np
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from voice.engine.tts import Speaker

RATE = 16_000
FRAME = RATE // 50  # 20 ms


def utterance(text: str, *, voice: str = "verse", speed: float = 1.0) -> bytes:
    """`text` spoken by the engine's own eSpeak voice, as 16 kHz mono s16le with the
    synthesiser's leading and trailing silence cut, so the audio ends where speech does."""
    pcm, rate = Speaker(voice=voice, speed=speed).synthesize(text)
    samples = np.frombuffer(pcm, dtype="<i2").reshape(1, -1)
    frame = av.AudioFrame.from_ndarray(samples, format="s16", layout="mono")
    frame.sample_rate = rate
    resampler = av.AudioResampler(format="s16", layout="mono", rate=RATE)
    chunks = [f.to_ndarray().reshape(-1) for f in resampler.resample(frame)]
    chunks += [f.to_ndarray().reshape(-1) for f in resampler.resample(None)]
    speech = np.concatenate(chunks).astype("<i2")
    loud = np.flatnonzero(np.abs(speech.astype(np.int32)) > 500)
    if loud.size:
        speech = speech[loud[0] : loud[-1] + 1]
    return speech.tobytes()


class Microphone(MediaStreamTrack):
    """Paced 16 kHz mono audio: what was queued with `say`, silence otherwise."""

    kind = "audio"

    def __init__(self) -> None:
        super().__init__()
        self._queue = bytearray()
        self._start: float | None = None
        self._pts = 0
        self.ended_at: float | None = None  # when the last queued sample went out

    def say(self, pcm: bytes) -> None:
        self.ended_at = None
        self._queue.extend(pcm)

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        if self._start is None:
            self._start = time.perf_counter()
        else:
            self._pts += FRAME
            delay = self._start + self._pts / RATE - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
        had_speech = bool(self._queue)
        chunk = bytes(self._queue[: FRAME * 2]).ljust(FRAME * 2, b"\0")
        del self._queue[: FRAME * 2]
        if had_speech and not self._queue:
            self.ended_at = time.perf_counter()
        frame = av.AudioFrame.from_ndarray(
            np.frombuffer(chunk, dtype="<i2").reshape(1, -1), format="s16", layout="mono"
        )
        frame.sample_rate = RATE
        frame.pts = self._pts
        frame.time_base = fractions.Fraction(1, RATE)
        return frame


@dataclass
class Arrival:
    at: float
    event: dict[str, Any]


class Caller:
    """One call; `arrivals` holds every server event in order with its arrival time."""

    def __init__(self) -> None:
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.microphone = Microphone()
        self.arrivals: list[Arrival] = []
        self.changed = asyncio.Event()
        self.channel: Any = None
        self._open = asyncio.Event()
        self._listeners: set[asyncio.Task[None]] = set()

    async def connect(self, calls_url: str, key: str) -> None:
        self.pc.addTrack(self.microphone)
        self.channel = self.pc.createDataChannel("oai-events")
        self.channel.on("message", self._on_message)
        self.channel.on("open", self._open.set)
        self.pc.on("track", self._on_track)
        await self.pc.setLocalDescription(await self.pc.createOffer())
        async with httpx.AsyncClient(timeout=60) as http:
            response = await http.post(
                calls_url,
                content=self.pc.localDescription.sdp.encode(),
                headers={"Authorization": f"Bearer {key}", "Content-Type": "application/sdp"},
            )
        if response.status_code != 201:
            raise RuntimeError(f"calls answered {response.status_code}: {response.text[:300]}")
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=response.text, type="answer"))
        await asyncio.wait_for(self._open.wait(), 30)
        await self.wait_for("session.created", timeout=30)

    def _on_track(self, track: MediaStreamTrack) -> None:
        # The assistant's voice is read and dropped, as a muted speaker would.
        task = asyncio.ensure_future(self._drain(track))
        self._listeners.add(task)
        task.add_done_callback(self._listeners.discard)

    async def _drain(self, track: MediaStreamTrack) -> None:
        while True:
            try:
                await track.recv()
            except MediaStreamError:
                return

    def _on_message(self, message: str) -> None:
        self.arrivals.append(Arrival(time.perf_counter(), json.loads(message)))
        self.changed.set()

    def send(self, event: dict[str, Any]) -> None:
        self.channel.send(json.dumps(event))

    async def wait_for(self, type_: str, *, after: int = 0, timeout: float = 20.0) -> Arrival:
        """The first event of `type_` at index >= `after`, waiting for it to arrive."""
        deadline = time.perf_counter() + timeout
        while True:
            self.changed.clear()
            for arrival in self.arrivals[after:]:
                if arrival.event.get("type") == type_:
                    return arrival
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                seen = [a.event.get("type") for a in self.arrivals[after:]]
                raise TimeoutError(f"no {type_} within {timeout} s; saw {seen[-12:]}")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), remaining)

    async def close(self) -> None:
        for task in list(self._listeners):
            task.cancel()
        self.microphone.stop()
        await self.pc.close()
