"""A Realtime WebRTC client built on aiortc, doing what the browser client does.

It opens a peer with a microphone track and the `oai-events` data channel, posts
its offer to `/realtime/calls` with an ephemeral key, and records every server event
and the energy of the assistant's audio. The microphone plays silence until the test
has it say a recording, so a test decides exactly when the user speaks.
"""

from __future__ import annotations

import asyncio
import fractions
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import numpy as np
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from av import AudioFrame

MIC_RATE = 16_000
MIC_FRAME = MIC_RATE // 50  # 20 ms


class Microphone(MediaStreamTrack):
    """16 kHz mono speech on the wall clock, silence in between.

    `speed` above 1 plays it that many times faster than real time, for tests of long
    speech (the engine times turns by the audio it receives, not by the clock)."""

    kind = "audio"

    def __init__(self, speed: float = 1.0) -> None:
        super().__init__()
        self._speed = speed
        self._queue = bytearray()
        self._start: float | None = None
        self._pts = 0

    def say(self, pcm: bytes) -> float:
        """Queue 16 kHz mono s16le audio; returns its duration in seconds."""
        self._queue.extend(pcm)
        return len(pcm) / 2 / MIC_RATE

    @property
    def speaking(self) -> bool:
        return bool(self._queue)

    async def recv(self) -> AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        if self._start is None:
            self._start = time.monotonic()
        else:
            self._pts += MIC_FRAME
            delay = self._start + self._pts / MIC_RATE / self._speed - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
        chunk = bytes(self._queue[: MIC_FRAME * 2]).ljust(MIC_FRAME * 2, b"\0")
        del self._queue[: MIC_FRAME * 2]
        frame = AudioFrame.from_ndarray(
            np.frombuffer(chunk, dtype="<i2").reshape(1, -1), format="s16", layout="mono"
        )
        frame.sample_rate = MIC_RATE
        frame.pts = self._pts
        frame.time_base = fractions.Fraction(1, MIC_RATE)
        return frame


@dataclass
class Speakerphone:
    """What the client heard from the assistant's track."""

    frames: int = 0
    loud_frames: int = 0
    energy: float = 0.0

    def hear(self, frame: Any) -> None:
        samples = frame.to_ndarray().astype(np.float64) / 32768.0
        self.frames += 1
        self.energy += float(np.sum(samples**2))
        if float(np.sqrt(np.mean(samples**2))) > 0.01:
            self.loud_frames += 1


@dataclass
class RealtimeClient:
    """One call from the client side; `events` holds every server event in order."""

    events: list[dict[str, Any]] = field(default_factory=list)
    heard: Speakerphone = field(default_factory=Speakerphone)
    call_id: str | None = None
    answer_status: int | None = None
    microphone_speed: float = 1.0

    def __post_init__(self) -> None:
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.microphone = Microphone(self.microphone_speed)
        self._arrived = asyncio.Condition()
        self._tasks: set[asyncio.Task[Any]] = set()
        self.channel: Any = None

    async def connect(
        self,
        engine_url: str,
        key: str,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        munge: Callable[[str], str] | None = None,
        munge_answer: Callable[[str], str] | None = None,
    ) -> httpx.Response:
        """Offer, post to /realtime/calls, and apply the answer when it is a 201.

        `transport` lets a test serve the site's ASGI app in its own process and loop;
        `munge` rewrites the offer's SDP before it is posted, as some web apps do;
        `munge_answer` rewrites the answer before it is applied (a peer that ignores
        the server's limits).
        """
        self.pc.addTrack(self.microphone)
        self.channel = self.pc.createDataChannel("oai-events")
        self.channel.on("message", self._on_message)
        self.pc.on("track", self._on_track)
        await self.pc.setLocalDescription(await self.pc.createOffer())
        offer: str = self.pc.localDescription.sdp
        async with httpx.AsyncClient(timeout=30, transport=transport) as http:
            response = await http.post(
                f"{engine_url}/realtime/calls",
                content=(munge(offer) if munge else offer).encode(),
                headers={"Authorization": f"Bearer {key}", "Content-Type": "application/sdp"},
            )
        self.answer_status = response.status_code
        if response.status_code == 201:
            self.call_id = response.headers["Location"].rstrip("/").rsplit("/", 1)[-1]
            await self.pc.setRemoteDescription(
                RTCSessionDescription(
                    sdp=munge_answer(response.text) if munge_answer else response.text,
                    type="answer",
                )
            )
        return response

    def _on_track(self, track: MediaStreamTrack) -> None:
        task = asyncio.ensure_future(self._listen(track))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _listen(self, track: MediaStreamTrack) -> None:
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            self.heard.hear(frame)

    def _on_message(self, message: str) -> None:
        self.events.append(json.loads(message))
        task = asyncio.ensure_future(self._notify())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _notify(self) -> None:
        async with self._arrived:
            self._arrived.notify_all()

    def send(self, event: dict[str, Any]) -> None:
        self.channel.send(json.dumps(event))

    def send_raw(self, text: str) -> None:
        self.channel.send(text)

    async def wait_for(
        self,
        type_: str,
        *,
        after: int = 0,
        timeout: float = 20.0,
        where: Callable[[dict[str, Any]], bool] | None = None,
    ) -> dict[str, Any]:
        """The first event of `type_` at index >= `after` (waiting for it to arrive)."""

        def found() -> dict[str, Any] | None:
            for event in self.events[after:]:
                if event["type"] == type_ and (where is None or where(event)):
                    return event
            return None

        async def wait() -> dict[str, Any]:
            async with self._arrived:
                await self._arrived.wait_for(lambda: found() is not None)
            event = found()
            assert event is not None
            return event

        try:
            return await asyncio.wait_for(wait(), timeout)
        except TimeoutError:
            seen = [e["type"] for e in self.events[after:]]
            raise AssertionError(f"no {type_} within {timeout} s; after {after}: {seen}") from None

    async def wait_count(self, type_: str, count: int, *, timeout: float = 20.0) -> None:
        """Wait until `count` events of `type_` have arrived."""

        def enough() -> bool:
            return sum(event["type"] == type_ for event in self.events) >= count

        async def wait() -> None:
            async with self._arrived:
                await self._arrived.wait_for(enough)

        try:
            await asyncio.wait_for(wait(), timeout)
        except TimeoutError:
            raise AssertionError(f"fewer than {count} {type_}: {self.types()}") from None

    def types(self, after: int = 0) -> list[str]:
        return [event["type"] for event in self.events[after:]]

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        self.microphone.stop()
        await self.pc.close()


def subsequence(wanted: list[str], actual: list[str]) -> bool:
    """True when `wanted` appears in `actual` in order (other events may interleave)."""
    remaining = iter(actual)
    return all(any(kind == seen for seen in remaining) for kind in wanted)
