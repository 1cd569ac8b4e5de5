"""One WebRTC call: an aiortc peer speaking the Realtime GA protocol on `oai-events`.

Microphone audio → 16 kHz mono → voice activity detection → speech-to-text (in a
worker process) → the brain → a function call or a spoken reply (text-to-speech in a thread)
on a paced outgoing track. Events go out on the data channel with the names, fields
and order OpenAI uses, so the browser client cannot tell the engine from OpenAI.

Everything here runs on the event loop of the Daphne process that answered the offer;
speech recognition runs in the recogniser's worker processes (pocketsphinx holds the
GIL), the brain and text-to-speech in the default thread executor.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import json
import logging
import re
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import av
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from aiortc.rtcsctptransport import REMOTE_DEFAULT_MAX_MESSAGE_SIZE

from voice.engine import brain, events, tts, vad
from voice.engine.audio import InboundAudio, OutgoingAudioTrack, shorten_jitter_buffer
from voice.engine.errors import EngineError
from voice.engine.recognition import get_recognizer
from voice.engine.registry import CallRegistry
from voice.engine.session import (
    check_array,
    check_int,
    check_max_output_tokens,
    check_metadata,
    check_modalities,
    check_object,
    check_string,
    check_tool_choice,
    check_tools,
    check_voice,
    invalid_value,
    missing,
    session_build,
    vad_parameters,
)

logger = logging.getLogger(__name__)

CHANNEL_LABEL = "oai-events"
# Data-channel messages past this size are refused unread (a session.update with
# large tool schemas stays well below it).
MAX_CLIENT_EVENT_BYTES = 512 * 1024
_ICE_GATHER_SECONDS = 10.0
# The largest data-channel message the peer accepts, from its offer; RFC 8841 sets 64 KB
# when the offer does not say (aiortc's default too), and 0 means no limit (aiortc
# refuses to send past it).
_MAX_MESSAGE_SIZE = re.compile(r"^a=max-message-size:(\d+)\s*$", re.MULTILINE)
# A pause in incoming packets this long is fed to turn detection as that much silence.
_AUDIO_GAP_SECONDS = 0.1
_GAP_SILENCE = bytes(int(16_000 * 2 * _AUDIO_GAP_SECONDS))
# Input audio held for a manual commit (OpenAI's buffer limit is of this order).
_MAX_HELD_BYTES = 16_000 * 2 * 60
# How long queued speech may take to start playing before the reply goes on without it.
_PLAYBACK_START_SECONDS = 5.0
# What a call keeps of its conversation (session truncation "auto"): far more than the
# brain reads (the latest turn, or a tool's output and its call). Past these bounds the
# oldest items are dropped, so a long or hostile session cannot grow the call without
# limit (one item alone may be nearly MAX_CLIENT_EVENT_BYTES).
MAX_CONVERSATION_ITEMS = 500
MAX_CONVERSATION_BYTES = 2 * 1024 * 1024

_CLIENT_EVENT_FIELDS: dict[str, tuple[str, ...]] = {
    "session.update": ("session",),
    "input_audio_buffer.commit": (),
    "input_audio_buffer.clear": (),
    "conversation.item.create": ("item", "previous_item_id"),
    "conversation.item.retrieve": ("item_id",),
    "conversation.item.delete": ("item_id",),
    "conversation.item.truncate": ("item_id", "content_index", "audio_end_ms"),
    "response.create": ("response",),
    "response.cancel": ("response_id",),
    "output_audio_buffer.clear": ("response_id",),
}
_RESPONSE_FIELDS = (
    "conversation",
    "input",
    "instructions",
    "output_modalities",
    "tools",
    "tool_choice",
    "max_output_tokens",
    "metadata",
    "audio",
)


def _words(text: str) -> int:
    return len(text.split())


def _chunks(text: str, size: int) -> list[str]:
    """Split text into pieces that join back to it exactly (for *.delta events)."""
    return [text[i : i + size] for i in range(0, len(text), size)] or [""]


def _transcript_deltas(text: str) -> list[str]:
    words = text.split(" ")
    return [w if i == 0 else " " + w for i, w in enumerate(words)] if text else []


def _serialise(event: events.Event) -> tuple[str, int]:
    """An event as data-channel text, and its size in bytes on the wire."""
    # UTF-8, as browsers send: escaping non-ASCII (json.dumps' default) triples its size.
    text = json.dumps(event, ensure_ascii=False)
    try:
        return text, len(text.encode())
    except UnicodeEncodeError:
        # A lone surrogate (a client's "\ud800") has no UTF-8 form; escaped, it has.
        text = json.dumps(event)
        return text, len(text)


def _over_event_limit(message: str) -> bool:
    """Whether a text event was more than MAX_CLIENT_EVENT_BYTES in UTF-8 on the wire."""
    # A character is 1 to 4 bytes in UTF-8: only text between the two bounds is encoded.
    if len(message) > MAX_CLIENT_EVENT_BYTES:
        return True
    if len(message) * 4 <= MAX_CLIENT_EVENT_BYTES:
        return False
    return len(message.encode()) > MAX_CLIENT_EVENT_BYTES


def _unreadable_offer(exc: Exception) -> EngineError:
    # aiortc's own checks raise ValueError with a message a person can act on; other
    # exceptions are accidents of its parser, whose text would mean nothing to a client.
    detail = (
        str(exc).rstrip(".")
        if isinstance(exc, ValueError) and str(exc)
        else "check that every m= section is well formed and has its a=mid, a=setup, "
        "a=ice-ufrag, a=ice-pwd and a=fingerprint lines, and that the offer is sent once"
    )
    return EngineError(
        f"The SDP offer could not be read: {detail}.", code="invalid_offer", param="sdp"
    )


@dataclass
class _Speculation:
    """Recognition started at a pause, before the turn ended (see vad.SpeechPaused)."""

    speech: bytes
    tools: list[Any]
    task: asyncio.Task[str]


@dataclass
class _Response:
    """A response from response.create or a detected turn, until response.done."""

    id: str
    modality: str
    instructions: str
    tools: list[dict[str, Any]]
    tool_choice: str | dict[str, Any]
    max_output_tokens: int | str
    voice: str
    in_conversation: bool
    metadata: dict[str, Any] | None
    # What the response reads instead of the conversation (response.input), if anything.
    input: list[dict[str, Any]] | None = None
    state: str = "queued"  # queued → in_progress → done
    task: asyncio.Task[None] | None = None
    output: list[dict[str, Any]] = field(default_factory=list)
    item: dict[str, Any] | None = None
    part_added: bool = False
    audio_started: bool = False
    input_words: int = 0
    output_words: int = 0

    def snapshot(self, *, status: str, status_details: Any, usage: Any) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "realtime.response",
            "status": status,
            "status_details": status_details,
            "output": self.output,
            "conversation_id": "conv_default" if self.in_conversation else None,
            "output_modalities": [self.modality],
            "max_output_tokens": self.max_output_tokens,
            "audio": {
                "output": {"format": {"type": "audio/pcm", "rate": 24000}, "voice": self.voice}
            },
            "usage": usage,
            "metadata": self.metadata,
        }


class Call:
    """A live call: its peer, session, conversation, and the response in progress."""

    def __init__(
        self,
        *,
        call_id: str,
        session: dict[str, Any],
        client_secret: str | None,
        registry: CallRegistry,
    ) -> None:
        self.id = call_id
        self.session = session
        self.client_secret = client_secret
        self.registry = registry
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.output = OutgoingAudioTrack()
        self.closed = False
        self.close_reason = ""
        self._channel: Any = None
        self._peer_max_message_bytes = REMOTE_DEFAULT_MAX_MESSAGE_SIZE
        self._connected = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._jobs: asyncio.Queue[Callable[[], Awaitable[None]]] = asyncio.Queue()
        self._items: list[dict[str, Any]] = []
        self._item_bytes: dict[str, int] = {}  # each item's JSON size when it was added
        self._conversation_bytes = 0
        # How much of each spoken assistant item's audio the conversation holds, in ms
        # (the engine keeps no sound of its own, only what a truncation must check).
        self._audio_ms: dict[str, int] = {}
        self._response: _Response | None = None
        self._speech_item: str | None = None
        # Where in the input audio the last response ended while nobody spoke: the
        # start of the silence that turn_detection.idle_timeout_ms measures.
        self._idle_since_ms: int | None = None
        self._speculation: _Speculation | None = None
        self._vad = self._new_vad()
        self._held = bytearray()  # input audio while turn detection is off
        self._speaker = self._new_speaker()

    # --- lifecycle --------------------------------------------------------------------------
    @property
    def tasks(self) -> set[asyncio.Task[Any]]:
        return set(self._tasks)

    async def answer(self, offer_sdp: str) -> str:
        """Take the browser's SDP offer and return the answer with every ICE candidate."""
        pc = self.pc
        pc.on("datachannel", self._on_datachannel)
        pc.on("track", self._on_track)
        pc.on("connectionstatechange", self._on_connection_state)
        try:
            await pc.setRemoteDescription(RTCSessionDescription(sdp=offer_sdp, type="offer"))
            if declared := _MAX_MESSAGE_SIZE.search(offer_sdp):
                self._peer_max_message_bytes = int(declared[1])
            has_audio = False
            for transceiver in pc.getTransceivers():
                if transceiver.kind == "audio":
                    has_audio = True
                    shorten_jitter_buffer(transceiver.receiver)
            if not has_audio and pc.sctp is None:
                raise EngineError(
                    "The SDP offer has neither an audio track nor a data channel.",
                    code="invalid_offer",
                    param="sdp",
                )
            if has_audio:
                pc.addTrack(self.output)
            answer = await pc.createAnswer()
            # aiortc does not trickle: setLocalDescription returns once gathering is complete.
            await asyncio.wait_for(pc.setLocalDescription(answer), _ICE_GATHER_SECONDS)
        except (EngineError, TimeoutError):
            raise
        except Exception as exc:
            # aiortc reads the offer while applying it, so a malformed one fails anywhere
            # from setRemoteDescription to setLocalDescription, with whatever the missing
            # line happened to break (AttributeError, AssertionError, ValueError...).
            logger.info("engine call %s: unreadable SDP offer", self.id, exc_info=True)
            raise _unreadable_offer(exc) from exc
        self._spawn(self._watch())
        self._spawn(self._work())
        return str(pc.localDescription.sdp)

    async def close(self, reason: str) -> None:
        """End the call and free its peer, tasks and registry slot (idempotent)."""
        if self.closed:
            return
        self.closed = True
        self.close_reason = reason
        logger.info("engine call %s ended: %s", self.id, reason)
        self.registry.release(self.id)
        current = asyncio.current_task()
        for task in list(self._tasks):
            if task is not current:
                task.cancel()
        self.output.stop()
        with contextlib.suppress(Exception):
            await self.pc.close()
        pending = [t for t in self._tasks if t is not current]
        if pending:
            await asyncio.wait(pending, timeout=5)

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        # The call outlives the HTTP request that opened it: its tasks start in a
        # context of their own, not in that request's (whose thread ends with it).
        task = asyncio.get_running_loop().create_task(coro, context=contextvars.Context())
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("engine call %s task failed", self.id, exc_info=task.exception())

    def _end_soon(self, reason: str) -> None:
        if not self.closed:
            asyncio.get_running_loop().create_task(
                self.close(reason), context=contextvars.Context()
            )

    async def _watch(self) -> None:
        """Free a call whose peer never connects, and end every call after the limit."""
        try:
            await asyncio.wait_for(self._connected.wait(), self.registry.connect_timeout_seconds)
        except TimeoutError:
            self._end_soon("never connected")
            return
        await asyncio.sleep(self.registry.max_call_seconds)
        self._end_soon("reached the call time limit")

    def _on_connection_state(self) -> None:
        state = self.pc.connectionState
        if state == "connected":
            self._connected.set()
        elif state in ("failed", "closed"):
            self._end_soon(f"peer connection {state}")

    def _on_datachannel(self, channel: Any) -> None:
        if channel.label != CHANNEL_LABEL or self._channel is not None:
            return
        self._channel = channel
        channel.on("message", self._on_message)
        channel.on("close", lambda: self._end_soon("data channel closed"))
        self._spawn(self._warm_transcriber())
        self._send(events.event("session.created", session=self.session))

    def _on_track(self, track: MediaStreamTrack) -> None:
        if track.kind == "audio":
            self._spawn(self._read_audio(track))

    # --- speech core ------------------------------------------------------------------------
    def _new_vad(self) -> vad.VoiceActivityDetector:
        detection = self.session["audio"]["input"]["turn_detection"]
        if detection is None:
            return vad.VoiceActivityDetector()
        return vad.VoiceActivityDetector(**vad_parameters(detection))

    def _new_speaker(self) -> tts.Speaker:
        output = self.session["audio"]["output"]
        return tts.Speaker(voice=output["voice"], speed=output["speed"])

    async def _warm_transcriber(self) -> None:
        """Build the recogniser for this session's tools before the user speaks."""
        try:
            await get_recognizer().prepare(self.session["tools"])
        except Exception:
            logger.exception("engine call %s: speech recogniser failed to start", self.id)

    async def _run_blocking(self, function: Callable[[], Any]) -> Any:
        return await asyncio.get_running_loop().run_in_executor(None, function)

    # --- sending ------------------------------------------------------------------------------
    def _send(self, event: events.Event) -> None:
        channel = self._channel
        if channel is None or channel.readyState != "open" or self.closed:
            return
        text, size = _serialise(event)
        if not self._fits(size):
            # aiortc would raise and end the call; the client loses this one event instead.
            logger.warning(
                "engine call %s: %s event of %d bytes not sent, over the peer's limit",
                self.id,
                event["type"],
                size,
            )
            self._send_error(
                EngineError(
                    f"The server could not send a {event['type']} event of {size} bytes: "
                    f"the peer accepts at most {self._peer_max_message_bytes} bytes per "
                    "message (a=max-message-size in its SDP offer).",
                    type="server_error",
                    code="event_too_large",
                ),
                None,
            )
            return
        channel.send(text)

    def _announce(self, response: _Response) -> None:
        self._send(
            events.event(
                "response.created",
                response=response.snapshot(status="in_progress", status_details=None, usage=None),
            )
        )

    def _fits(self, size: int) -> bool:
        limit = self._peer_max_message_bytes
        return limit == 0 or size <= limit

    def _refuse_unsendable(self, echo: events.Event, param: str) -> None:
        """Refuse a client event whose echo the peer could not receive."""
        _, size = _serialise(echo)
        if not self._fits(size):
            raise invalid_value(
                param,
                f"echoed back in {echo['type']} it would be {size} bytes, more than the "
                f"{self._peer_max_message_bytes} bytes your peer accepts per data-channel "
                "message (a=max-message-size in its SDP offer).",
            )

    def _send_error(self, error: EngineError, event_id: str | None) -> None:
        self._send(events.error(error, event_id=event_id))

    @property
    def _last_item_id(self) -> str | None:
        return self._items[-1]["id"] if self._items else None

    def _previous_item(self, previous_item_id: str | None) -> str | None:
        """The id of the item a new one would follow (None: at the start)."""
        if previous_item_id is None:
            return self._last_item_id
        return None if previous_item_id == "root" else previous_item_id

    def _append_item(self, item: dict[str, Any], previous_item_id: str | None = None) -> str | None:
        """Add an item to the conversation; returns the id of the item before it."""
        previous = self._previous_item(previous_item_id)
        index = (
            0
            if previous is None
            else next(i for i, it in enumerate(self._items) if it["id"] == previous) + 1
        )
        self._items.insert(index, item)
        # Measured as added: what the engine writes into its own items later (a
        # transcript, a reply) is a few hundred bytes from the recogniser or the brain.
        size = _serialise(item)[1]
        self._item_bytes[item["id"]] = size
        self._conversation_bytes += size
        self._truncate_conversation(keep=item)
        return previous

    def _forget_item(self, item: dict[str, Any]) -> None:
        self._items.remove(item)
        self._conversation_bytes -= self._item_bytes.pop(item["id"], 0)
        self._audio_ms.pop(item["id"], None)

    def _truncate_conversation(self, *, keep: dict[str, Any]) -> None:
        """Drop the oldest items (never `keep`, the newest) while over the bounds.

        Silently: OpenAI's truncation drops items from what the model reads without an
        event (conversation.item.deleted answers a client's delete; the protocol doc
        names no event for truncation), so clients here are not told either. A
        retention_ratio truncation drops down to that share of the bounds, as OpenAI's
        does, so it does not truncate again at every item; "disabled" cannot mean
        unbounded memory and truncates as "auto".
        """
        items = self._items
        if (
            len(items) <= MAX_CONVERSATION_ITEMS
            and self._conversation_bytes <= MAX_CONVERSATION_BYTES
        ):
            return
        truncation = self.session["truncation"]
        ratio = truncation["retention_ratio"] if isinstance(truncation, dict) else 1.0
        max_items = max(1, int(MAX_CONVERSATION_ITEMS * ratio))
        max_bytes = int(MAX_CONVERSATION_BYTES * ratio)
        while len(items) > 1 and (len(items) > max_items or self._conversation_bytes > max_bytes):
            self._forget_item(items[0] if items[0] is not keep else items[1])

    # --- incoming audio -----------------------------------------------------------------------
    async def _read_audio(self, track: MediaStreamTrack) -> None:
        inbound = InboundAudio()
        while True:
            try:
                frame = await asyncio.wait_for(track.recv(), _AUDIO_GAP_SECONDS)
            except MediaStreamError:
                return
            except TimeoutError:
                # No packets is silence: browsers stop sending during silence (Opus DTX,
                # a finished fake microphone), and the turn must still end.
                frame = None
            if self._channel is None or (
                frame is not None and not isinstance(frame, av.AudioFrame)
            ):
                continue  # no session yet: nobody to tell about this audio
            pcm = bytes(_GAP_SILENCE) if frame is None else inbound.convert(frame)
            if self.session["audio"]["input"]["turn_detection"] is None:
                # The client commits by hand: hold everything (the detector would cut
                # the buffer at the turns it hears).
                self._held.extend(pcm)
                del self._held[: max(0, len(self._held) - _MAX_HELD_BYTES)]
                continue
            for change in self._vad.feed(pcm):
                if isinstance(change, vad.SpeechStarted):
                    self._speech_started(change.audio_start_ms)
                elif isinstance(change, vad.SpeechPaused):
                    self._speech_paused(change)
                else:
                    self._speech_stopped(change)
            self._check_idle()

    def _check_idle(self) -> None:
        """After idle_timeout_ms of input with no speech since the last response ended,
        commit that silence as a turn and respond to it, as OpenAI's server_vad does."""
        detection = self.session["audio"]["input"]["turn_detection"]
        timeout = detection.get("idle_timeout_ms") if detection else None
        since = self._idle_since_ms
        if timeout is None or since is None or self._response is not None or self._vad.speaking:
            return
        if self._vad.position_ms - since < timeout:
            return
        self._idle_since_ms = None
        stopped = self._vad.commit()
        end = stopped.audio_end_ms if stopped is not None else self._vad.position_ms
        # The detector may hold audio from before the response ended: only the idle
        # stretch is committed, as OpenAI's audio_start_ms..audio_end_ms say.
        idle_bytes = (end - since) * vad.BYTES_PER_MS
        audio = stopped.audio[-idle_bytes:] if stopped is not None else b""
        item_id = events.new_id("item")
        self._send(
            events.event(
                "input_audio_buffer.timeout_triggered",
                audio_start_ms=since,
                audio_end_ms=end,
                item_id=item_id,
            )
        )
        self._commit_audio(item_id, audio, respond=detection["create_response"])

    def _speech_started(self, audio_start_ms: int) -> None:
        self._idle_since_ms = None
        self._drop_speculation()
        self._speech_item = events.new_id("item")
        self._send(
            events.event(
                "input_audio_buffer.speech_started",
                audio_start_ms=audio_start_ms,
                item_id=self._speech_item,
            )
        )
        detection = self.session["audio"]["input"]["turn_detection"]
        if detection and detection["interrupt_response"] and self._response is not None:
            self._cancel_response(self._response, reason="turn_detected")

    def _speech_paused(self, paused: vad.SpeechPaused) -> None:
        """Start recognising the turn so far: if the silence holds until the turn ends,
        the words are ready then, instead of a recognition's time later."""
        self._drop_speculation()
        tools = self.session["tools"]
        task = asyncio.get_running_loop().create_task(
            get_recognizer().transcribe(tools, paused.speech)
        )
        # Tracked, so closing the call cancels it; its failure is reported by the turn
        # that uses it, or by nobody when the speaker went on.
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        self._speculation = _Speculation(speech=paused.speech, tools=tools, task=task)

    def _drop_speculation(self) -> None:
        speculation, self._speculation = self._speculation, None
        if speculation is not None and not speculation.task.done():
            speculation.task.cancel()

    def _take_speculation(self, speech: bytes) -> asyncio.Task[str] | None:
        """The recognition already running on exactly this speech with today's tools."""
        speculation, self._speculation = self._speculation, None
        if speculation is None:
            return None
        if speculation.speech == speech and speculation.tools == self.session["tools"]:
            return speculation.task
        if not speculation.task.done():
            speculation.task.cancel()
        return None

    def _speech_stopped(self, stopped: vad.SpeechStopped) -> None:
        item_id = self._speech_item or events.new_id("item")
        self._speech_item = None
        self._send(
            events.event(
                "input_audio_buffer.speech_stopped",
                audio_end_ms=stopped.audio_end_ms,
                item_id=item_id,
            )
        )
        detection = self.session["audio"]["input"]["turn_detection"]
        self._commit_audio(
            item_id,
            stopped.audio,
            speech=stopped.speech,
            respond=bool(detection and detection["create_response"]),
        )

    def _commit_audio(
        self, item_id: str, audio: bytes, *, speech: bytes | None = None, respond: bool
    ) -> None:
        """Commit a turn's `audio` as a user item and queue the recognition of its
        `speech` (the whole audio unless the detector found where speech ended)."""
        speech = audio if speech is None else speech
        early = self._take_speculation(speech)
        item = events.user_audio_item(item_id, None)
        previous = self._append_item(item)
        self._send(
            events.event("input_audio_buffer.committed", previous_item_id=previous, item_id=item_id)
        )
        self._send(events.event("conversation.item.added", previous_item_id=previous, item=item))
        self._send(events.event("conversation.item.done", previous_item_id=previous, item=item))
        self._jobs.put_nowait(
            lambda: self._transcribe(item, audio, speech=speech, early=early, respond=respond)
        )

    async def _transcribe(
        self,
        item: dict[str, Any],
        audio: bytes,
        *,
        speech: bytes,
        early: asyncio.Task[str] | None,
        respond: bool,
    ) -> None:
        try:
            if early is not None:
                text = (await early).strip()
            else:
                text = (await get_recognizer().transcribe(self.session["tools"], speech)).strip()
        except Exception as exc:
            logger.exception("engine call %s: transcription failed", self.id)
            self._send(
                events.event(
                    "conversation.item.input_audio_transcription.failed",
                    item_id=item["id"],
                    content_index=0,
                    error={
                        "type": "transcription_error",
                        "code": "transcription_failed",
                        "message": f"Speech recognition failed: {type(exc).__name__}",
                        "param": None,
                    },
                )
            )
            return
        item["content"][0]["transcript"] = text
        self._send(
            events.event(
                "conversation.item.input_audio_transcription.completed",
                item_id=item["id"],
                content_index=0,
                transcript=text,
                usage={"type": "duration", "seconds": round(len(audio) / 32000, 3)},
            )
        )
        if respond and self._response is None:
            await self._respond(self._new_response(None))

    # --- the work queue: transcriptions and responses, in order -------------------------------
    async def _work(self) -> None:
        while True:
            job = await self._jobs.get()
            try:
                await job()
            except Exception:
                logger.exception("engine call %s: a turn failed", self.id)

    def _new_response(self, overrides: dict[str, Any] | None) -> _Response:
        session = self.session
        config = overrides or {}
        audio_out = config.get("audio", {}).get("output", {})
        response = _Response(
            id=events.new_id("resp"),
            modality=(config.get("output_modalities") or session["output_modalities"])[0],
            instructions=config.get("instructions", session["instructions"]),
            tools=config.get("tools", session["tools"]),
            tool_choice=config.get("tool_choice", session["tool_choice"]),
            max_output_tokens=config.get("max_output_tokens", session["max_output_tokens"]),
            voice=audio_out.get("voice", session["audio"]["output"]["voice"]),
            in_conversation=config.get("conversation", "auto") != "none",
            metadata=config.get("metadata"),
            input=config.get("input"),
        )
        self._response = response
        return response

    async def _respond(self, response: _Response) -> None:
        if response.state == "done":
            return  # cancelled while queued
        response.task = self._spawn(self._run_response(response))
        await asyncio.wait([response.task])

    def _usage(self, response: _Response) -> dict[str, Any]:
        audio = response.modality == "audio"
        return events.usage(
            input_text=response.input_words,
            input_audio=0,
            output_text=0 if audio else response.output_words,
            output_audio=response.output_words if audio else 0,
        )

    def _finish(self, response: _Response, status: str, details: Any) -> None:
        response.state = "done"
        if self._response is response:
            self._response = None
        # The reply has been heard (response.done follows its playback): silence counts
        # from here, unless the user is already speaking over it.
        self._idle_since_ms = None if self._vad.speaking else self._vad.position_ms
        self._send(
            events.event(
                "response.done",
                response=response.snapshot(
                    status=status, status_details=details, usage=self._usage(response)
                ),
            )
        )

    async def _run_response(self, response: _Response) -> None:
        response.state = "in_progress"
        self._announce(response)
        try:
            decision = await self._decide(response)
            if isinstance(decision, brain.FunctionCall):
                self._emit_function_call(response, decision)
                self._finish(response, "completed", None)
                return
            text = decision.text
            details: Any = None
            if response.max_output_tokens != "inf" and _words(text) > int(
                response.max_output_tokens
            ):
                text = " ".join(text.split()[: int(response.max_output_tokens)])
                details = {"type": "incomplete", "reason": "max_output_tokens"}
            await self._speak(response, text)
            self._finish(response, "incomplete" if details else "completed", details)
        except Exception:
            logger.exception("engine call %s: response failed", self.id)
            if response.state != "done":
                self._finish(
                    response,
                    "failed",
                    {"type": "failed", "error": {"type": "server_error", "code": "engine_error"}},
                )

    async def _decide(self, response: _Response) -> brain.FunctionCall | brain.Reply:
        """Ask the brain: confirm a tool's output, or answer the latest user turn."""
        items = self._items if response.input is None else response.input
        last = items[-1] if items else None
        if last is not None and last["type"] == "function_call_output":
            call = next(
                (
                    it
                    for it in reversed(items)
                    if it["type"] == "function_call" and it["call_id"] == last["call_id"]
                ),
                None,
            )
            name = call["name"] if call else ""
            try:
                arguments = json.loads(call["arguments"]) if call else {}
            except ValueError:
                arguments = {}
            output = str(last["output"])
            response.input_words = _words(output)
            text = await self._run_blocking(
                lambda: brain.confirm(name=name, arguments=arguments, output=output)
            )
            return brain.Reply(text=str(text))
        text = ""
        if last is not None and last["type"] == "message" and last["role"] == "user":
            part = last["content"][0]
            text = part.get("text") or part.get("transcript") or ""
        tools = response.tools
        choice = response.tool_choice
        if choice == "none":
            tools = []
        elif isinstance(choice, dict):
            tools = [t for t in tools if t["name"] == choice["name"]]
        response.input_words = _words(text) + _words(response.instructions)
        instructions = response.instructions
        decision: brain.FunctionCall | brain.Reply = await self._run_blocking(
            lambda: brain.decide(text=text, tools=tools, instructions=instructions)
        )
        return decision

    def _emit_function_call(self, response: _Response, decision: brain.FunctionCall) -> None:
        arguments = json.dumps(decision.arguments)
        call_id = events.new_id("call")
        item = events.function_call_item(
            events.new_id("item"),
            call_id=call_id,
            name=decision.name,
            arguments="",
            status="in_progress",
        )
        response.item = item
        response.output_words = _words(arguments.replace('"', " "))
        common = {"response_id": response.id, "output_index": 0}
        self._send(events.event("response.output_item.added", **common, item=dict(item)))
        previous = self._conversation_item_added(response, item)
        for delta in _chunks(arguments, max(8, len(arguments) // 2 + 1)):
            self._send(
                events.event(
                    "response.function_call_arguments.delta",
                    **common,
                    item_id=item["id"],
                    call_id=call_id,
                    delta=delta,
                )
            )
        self._send(
            events.event(
                "response.function_call_arguments.done",
                **common,
                item_id=item["id"],
                call_id=call_id,
                name=decision.name,
                arguments=arguments,
            )
        )
        item.update(arguments=arguments, status="completed")
        response.output.append(item)
        self._conversation_item_done(response, previous, item)
        self._send(events.event("response.output_item.done", **common, item=item))

    # conversation.item.added and .done speak of the default conversation only: an
    # out-of-band response's output (conversation "none") is not in it.
    def _conversation_item_added(self, response: _Response, item: dict[str, Any]) -> str | None:
        if not response.in_conversation:
            return None
        previous = self._append_item(item)
        self._send(events.event("conversation.item.added", previous_item_id=previous, item=item))
        return previous

    def _conversation_item_done(
        self, response: _Response, previous: str | None, item: dict[str, Any]
    ) -> None:
        if response.in_conversation:
            self._send(events.event("conversation.item.done", previous_item_id=previous, item=item))

    async def _speak(self, response: _Response, text: str) -> None:
        """A message item: transcript (or text) events, then the audio on the track."""
        audio = response.modality == "audio"
        item = events.assistant_item(
            events.new_id("item"), modality=response.modality, text="", status="in_progress"
        )
        response.item = item
        response.output_words = _words(text)
        common = {"response_id": response.id, "output_index": 0}
        parts = {**common, "item_id": item["id"], "content_index": 0}
        self._send(events.event("response.output_item.added", **common, item=item))
        previous = self._conversation_item_added(response, item)
        self._send(
            events.event(
                "response.content_part.added",
                **parts,
                part=events.content_part(modality=response.modality, text=""),
            )
        )
        response.part_added = True
        synthesis: asyncio.Future[Any] | None = None
        if audio:
            speaker = self._speaker
            if response.voice != speaker.voice:  # response.create chose its own voice
                speaker = tts.Speaker(voice=response.voice, speed=speaker.speed)
            synthesis = self._spawn(self._run_blocking(lambda: speaker.synthesize(text)))
        kind = "response.output_audio_transcript" if audio else "response.output_text"
        for delta in _transcript_deltas(text):
            self._send(events.event(f"{kind}.delta", **parts, delta=delta))
        field_name = "transcript" if audio else "text"
        self._send(events.event(f"{kind}.done", **parts, **{field_name: text}))
        item["content"][0][field_name] = text
        if synthesis is not None:
            try:
                pcm, rate = await synthesis
            except Exception:
                logger.exception("engine call %s: speech synthesis failed", self.id)
                pcm, rate = b"", 16000
            # setdefault: a client may have truncated the item before its audio was made.
            self._audio_ms.setdefault(item["id"], len(pcm) * 1000 // (2 * rate))
            if pcm:
                await self._play(response, pcm, rate)
            self._send(events.event("response.output_audio.done", **parts))
        self._send(
            events.event(
                "response.content_part.done",
                **parts,
                part=events.content_part(modality=response.modality, text=text),
            )
        )
        item["status"] = "completed"
        response.output.append(item)
        self._conversation_item_done(response, previous, item)
        self._send(events.event("response.output_item.done", **common, item=item))

    async def _play(self, response: _Response, pcm: bytes, rate: int) -> None:
        playback = self.output.play(pcm, rate)
        try:
            await asyncio.wait_for(playback.started.wait(), _PLAYBACK_START_SECONDS)
        except TimeoutError:
            self.output.clear()
            logger.warning("engine call %s: nobody is pulling the audio track", self.id)
            return
        response.audio_started = True
        self._send(events.event("output_audio_buffer.started", response_id=response.id))
        seconds = len(pcm) / 2 / rate
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(playback.finished.wait(), seconds + _PLAYBACK_START_SECONDS)
        response.audio_started = False
        self._send(events.event("output_audio_buffer.stopped", response_id=response.id))

    def _cancel_response(self, response: _Response, *, reason: str) -> None:
        """Stop a response now: drop its audio and report it cancelled, in protocol order."""
        if response.state == "done":
            return
        if self._response is response:
            self._response = None
        if response.task is not None:
            response.task.cancel()
        if response.state == "queued":
            # Waiting behind a turn's transcription, it was never announced; OpenAI
            # creates a response at once, so the client still sees it created and ended.
            self._announce(response)
            self._finish(response, "cancelled", {"type": "cancelled", "reason": reason})
            return
        self.output.clear()
        if response.audio_started:
            self._send(events.event("output_audio_buffer.cleared", response_id=response.id))
            self._send(events.event("output_audio_buffer.stopped", response_id=response.id))
        item = response.item
        if item is not None and item["status"] != "completed":
            item["status"] = "incomplete"
            common = {"response_id": response.id, "output_index": 0}
            if response.part_added:
                text = item["content"][0].get("transcript", item["content"][0].get("text", ""))
                self._send(
                    events.event(
                        "response.content_part.done",
                        **common,
                        item_id=item["id"],
                        content_index=0,
                        part=events.content_part(modality=response.modality, text=text or ""),
                    )
                )
            response.output.append(item)
            self._send(events.event("response.output_item.done", **common, item=item))
        self._finish(response, "cancelled", {"type": "cancelled", "reason": reason})

    # --- client events ------------------------------------------------------------------------
    def _on_message(self, message: str | bytes) -> None:
        event_id: str | None = None
        try:
            if isinstance(message, bytes):
                raise EngineError("Events must be JSON text messages.", code="invalid_json")
            if _over_event_limit(message):
                raise EngineError(
                    f"Events may be at most {MAX_CLIENT_EVENT_BYTES} bytes.", code="invalid_value"
                )
            try:
                data = json.loads(message)
            except ValueError as exc:
                raise EngineError(
                    f"The event is not valid JSON: {exc}", code="invalid_json"
                ) from exc
            except RecursionError as exc:
                raise EngineError(
                    "The event's objects and arrays nest too deeply.", code="invalid_json"
                ) from exc
            if not isinstance(data, dict):
                raise EngineError("An event must be a JSON object.", code="invalid_type")
            if isinstance(data.get("event_id"), str):
                event_id = data["event_id"]
            if "type" not in data:
                raise missing("type")
            kind = check_string(data["type"], "type")
            if kind not in _CLIENT_EVENT_FIELDS:
                raise EngineError(
                    f"Invalid value: '{kind}' is not a client event this server supports.",
                    code="invalid_value",
                    param="type",
                )
            check_object(data, "", ("type", "event_id", *_CLIENT_EVENT_FIELDS[kind]))
            if "event_id" in data:
                check_string(data["event_id"], "event_id", max_length=512)
            self._handlers[kind](self, data)
        except EngineError as error:
            self._send_error(error, event_id)
        except Exception:
            # Raised into aiortc, it would end the whole call over one event.
            logger.exception("engine call %s: a client event failed", self.id)
            self._send_error(
                EngineError(
                    "The server could not process this event.",
                    type="server_error",
                    code="server_error",
                ),
                event_id,
            )

    def _session_update(self, data: dict[str, Any]) -> None:
        if "session" not in data:
            raise missing("session")
        before = self.session
        after = session_build(data=data["session"], current=before)
        updated = events.event("session.updated", session=after)
        self._refuse_unsendable(updated, "session")
        self.session = after
        if before["audio"]["input"]["turn_detection"] != after["audio"]["input"]["turn_detection"]:
            self._vad = self._new_vad()
            if self._idle_since_ms is not None:
                self._idle_since_ms = 0  # the new detector counts from zero
            self._drop_speculation()
            self._held.clear()
        if before["audio"]["output"] != after["audio"]["output"]:
            self._speaker = self._new_speaker()
        if before["tools"] != after["tools"]:
            self._spawn(self._warm_transcriber())
        self._send(updated)

    def _audio_commit(self, data: dict[str, Any]) -> None:
        if self.session["audio"]["input"]["turn_detection"] is None:
            audio = bytes(self._held)
            self._held.clear()
        else:
            stopped = self._vad.commit()
            audio = stopped.audio if stopped is not None else b""
        if not audio:
            raise EngineError(
                "Error committing input audio buffer: the buffer is empty.",
                code="input_audio_buffer_commit_empty",
            )
        item_id = self._speech_item or events.new_id("item")
        self._speech_item = None
        detection = self.session["audio"]["input"]["turn_detection"]
        self._commit_audio(item_id, audio, respond=bool(detection and detection["create_response"]))

    def _audio_clear(self, data: dict[str, Any]) -> None:
        self._vad.clear()
        self._drop_speculation()
        self._held.clear()
        self._speech_item = None
        self._send(events.event("input_audio_buffer.cleared"))

    def _item_create(self, data: dict[str, Any]) -> None:
        if "item" not in data:
            raise missing("item")
        previous_item_id = data.get("previous_item_id")
        if previous_item_id is not None:
            check_string(previous_item_id, "previous_item_id")
            if previous_item_id != "root" and not any(
                it["id"] == previous_item_id for it in self._items
            ):
                raise invalid_value(
                    "previous_item_id", f"no item '{previous_item_id}' in the conversation."
                )
        item = self._parse_item(data["item"], path="item")
        previous = self._previous_item(previous_item_id)
        added = events.event("conversation.item.added", previous_item_id=previous, item=item)
        self._refuse_unsendable(added, "item")
        self._append_item(item, previous_item_id)
        self._send(added)
        self._send(events.event("conversation.item.done", previous_item_id=previous, item=item))

    def _parse_item(
        self, raw: Any, *, path: str, earlier: list[dict[str, Any]] | None = None
    ) -> dict[str, Any]:
        """A new item at `path` of a client event; `earlier`: the items before it in a
        response.input, which may hold the function call an output answers."""
        if not isinstance(raw, dict):
            check_object(raw, path, ())
        known = self._items if earlier is None else [*self._items, *earlier]
        kind = raw.get("type", "message")
        item_id = raw.get("id")
        if item_id is not None:
            check_string(item_id, f"{path}.id", max_length=64)
            if any(it["id"] == item_id for it in known):
                raise invalid_value(f"{path}.id", f"an item '{item_id}' already exists.")
        item_id = item_id or events.new_id("item")
        base = {"id": item_id, "object": "realtime.item", "status": "completed"}
        if kind == "function_call_output":
            check_object(raw, path, ("id", "object", "type", "status", "call_id", "output"))
            for key in ("call_id", "output"):
                if key not in raw:
                    raise missing(f"{path}.{key}")
            call_id = check_string(raw["call_id"], f"{path}.call_id")
            if not any(it["type"] == "function_call" and it["call_id"] == call_id for it in known):
                raise invalid_value(
                    f"{path}.call_id", f"no function call '{call_id}' in the conversation."
                )
            output = check_string(raw["output"], f"{path}.output", max_length=65_536)
            return {**base, "type": kind, "call_id": call_id, "output": output}
        if kind == "function_call":
            check_object(
                raw, path, ("id", "object", "type", "status", "call_id", "name", "arguments")
            )
            for key in ("call_id", "name", "arguments"):
                if key not in raw:
                    raise missing(f"{path}.{key}")
            return {
                **base,
                "type": kind,
                "call_id": check_string(raw["call_id"], f"{path}.call_id"),
                "name": check_string(raw["name"], f"{path}.name"),
                "arguments": check_string(raw["arguments"], f"{path}.arguments"),
            }
        if kind != "message":
            kinds = "'message', 'function_call' or 'function_call_output'"
            if earlier is not None:
                kinds = "'item_reference', " + kinds
            raise invalid_value(f"{path}.type", f"'{kind}'; use {kinds}.")
        check_object(raw, path, ("id", "object", "type", "status", "role", "content"))
        if "role" not in raw:
            raise missing(f"{path}.role")
        role = raw["role"]
        if role not in ("user", "system", "assistant"):
            raise invalid_value(f"{path}.role", "use 'user', 'system' or 'assistant'.")
        content = raw.get("content")
        if not isinstance(content, list) or not content:
            raise invalid_value(f"{path}.content", "expected a non-empty array of content parts.")
        text_type = "output_text" if role == "assistant" else "input_text"
        parts = []
        for index, part in enumerate(content):
            where = f"{path}.content[{index}]"
            check_object(part, where, ("type", "text"))
            if part.get("type") != text_type:
                raise invalid_value(
                    f"{where}.type",
                    f"{role} messages take '{text_type}' parts here (audio goes on the track).",
                )
            if "text" not in part:
                raise missing(f"{where}.text")
            parts.append({"type": text_type, "text": check_string(part["text"], f"{where}.text")})
        return {**base, "type": "message", "role": role, "content": parts}

    def _item_retrieve(self, data: dict[str, Any]) -> None:
        item = self._find_item(data)
        self._send(events.event("conversation.item.retrieved", item=item))

    def _item_delete(self, data: dict[str, Any]) -> None:
        item = self._find_item(data)
        self._forget_item(item)
        self._send(events.event("conversation.item.deleted", item_id=item["id"]))

    def _item_truncate(self, data: dict[str, Any]) -> None:
        """Cut an assistant item's audio where the client's playback stopped.

        As OpenAI does, the item's transcript goes too, so the conversation holds no
        words the user did not hear. Playback is the client's to stop (with
        output_audio_buffer.clear): this changes only what the conversation holds.
        """
        for key in ("item_id", "content_index", "audio_end_ms"):
            if key not in data:
                raise missing(key)
        item = self._find_item(data)
        if item["type"] != "message" or item["role"] != "assistant":
            raise invalid_value("item_id", "only assistant message items can be truncated.")
        content_index = check_int(data["content_index"], "content_index", 0, 2**31 - 1)
        parts = item["content"]
        if content_index >= len(parts) or parts[content_index]["type"] != "output_audio":
            raise invalid_value(
                "content_index", f"item '{item['id']}' has no audio at index {content_index}."
            )
        audio_end_ms = check_int(data["audio_end_ms"], "audio_end_ms", 0, 2**31 - 1)
        duration = self._audio_ms.get(item["id"], 0)
        if audio_end_ms > duration:
            raise invalid_value(
                "audio_end_ms",
                f"{audio_end_ms} ms is past the end of the item's audio ({duration} ms).",
            )
        self._audio_ms[item["id"]] = audio_end_ms
        parts[content_index]["transcript"] = ""
        self._send(
            events.event(
                "conversation.item.truncated",
                item_id=item["id"],
                content_index=content_index,
                audio_end_ms=audio_end_ms,
            )
        )

    def _find_item(self, data: dict[str, Any]) -> dict[str, Any]:
        if "item_id" not in data:
            raise missing("item_id")
        item_id = check_string(data["item_id"], "item_id")
        for item in self._items:
            if item["id"] == item_id:
                return item
        raise EngineError(
            f"Item with item_id '{item_id}' not found.", code="item_not_found", param="item_id"
        )

    def _response_create(self, data: dict[str, Any]) -> None:
        overrides = self._parse_response(data.get("response", {}))
        if self._response is not None:
            raise EngineError(
                "Conversation already has an active response in progress: "
                f"{self._response.id}. Wait until it is finished before creating a new one.",
                code="conversation_already_has_active_response",
            )
        response = self._new_response(overrides)
        self._jobs.put_nowait(lambda: self._respond(response))

    def _parse_response(self, raw: Any) -> dict[str, Any]:
        config = check_object(raw, "response", _RESPONSE_FIELDS)
        result: dict[str, Any] = {}
        if "conversation" in config:
            value = config["conversation"]
            if value not in ("auto", "none"):
                raise invalid_value("response.conversation", "use 'auto' or 'none'.")
            result["conversation"] = value
        if "input" in config:
            result["input"] = self._parse_input(config["input"])
        if "instructions" in config:
            result["instructions"] = check_string(config["instructions"], "response.instructions")
        if "output_modalities" in config:
            result["output_modalities"] = check_modalities(
                config["output_modalities"], "response.output_modalities"
            )
        if "tools" in config:
            result["tools"] = check_tools(config["tools"], "response.tools")
        if "tool_choice" in config:
            result["tool_choice"] = check_tool_choice(config["tool_choice"], "response.tool_choice")
        if "max_output_tokens" in config:
            result["max_output_tokens"] = check_max_output_tokens(
                config["max_output_tokens"], "response.max_output_tokens"
            )
        if "metadata" in config:
            result["metadata"] = check_metadata(config["metadata"], "response.metadata")
        if "audio" in config:
            audio = check_object(config["audio"], "response.audio", ("output",))
            output = check_object(
                audio.get("output", {}), "response.audio.output", ("voice", "format")
            )
            result["audio"] = {"output": {}}
            if "voice" in output:
                result["audio"]["output"]["voice"] = check_voice(
                    output["voice"], "response.audio.output.voice"
                )
        return result

    def _parse_input(self, raw: Any) -> list[dict[str, Any]]:
        """response.input: what the response reads instead of the conversation. New
        items stay out of the conversation; a reference is resolved now, to the item
        itself, so a turn still being transcribed is read with its transcript."""
        context: list[dict[str, Any]] = []
        for index, entry in enumerate(check_array(raw, "response.input")):
            where = f"response.input[{index}]"
            if not (isinstance(entry, dict) and entry.get("type") == "item_reference"):
                context.append(self._parse_item(entry, path=where, earlier=context))
                continue
            check_object(entry, where, ("type", "id"))
            if "id" not in entry:
                raise missing(f"{where}.id")
            item_id = check_string(entry["id"], f"{where}.id")
            item = next((it for it in self._items if it["id"] == item_id), None)
            if item is None:
                raise invalid_value(f"{where}.id", f"no item '{item_id}' in the conversation.")
            context.append(item)
        return context

    def _response_cancel(self, data: dict[str, Any]) -> None:
        response = self._response
        wanted = data.get("response_id")
        if response is None or (wanted is not None and wanted != response.id):
            raise EngineError(
                "Cancellation failed: no active response found.",
                code="response_cancel_not_active",
                param="response_id" if wanted is not None else None,
            )
        self._cancel_response(response, reason="client_cancelled")

    def _output_clear(self, data: dict[str, Any]) -> None:
        response = self._response
        if response is not None and response.audio_started:
            self._cancel_response(response, reason="client_cancelled")
            return
        self.output.clear()
        self._send(events.event("output_audio_buffer.cleared", response_id=None))

    _handlers: dict[str, Callable[[Call, dict[str, Any]], None]] = {
        "session.update": _session_update,
        "input_audio_buffer.commit": _audio_commit,
        "input_audio_buffer.clear": _audio_clear,
        "conversation.item.create": _item_create,
        "conversation.item.retrieve": _item_retrieve,
        "conversation.item.delete": _item_delete,
        "conversation.item.truncate": _item_truncate,
        "response.create": _response_create,
        "response.cancel": _response_cancel,
        "output_audio_buffer.clear": _output_clear,
    }


async def call_start(
    *,
    registry: CallRegistry,
    call_id: str,
    session: dict[str, Any],
    client_secret: str | None,
    offer_sdp: str,
) -> tuple[Call, str]:
    """Answer an offer in a reserved slot; returns the call and the answer SDP.

    The slot is freed if answering fails (a bad offer, ICE gathering timing out).
    """
    call = Call(call_id=call_id, session=session, client_secret=client_secret, registry=registry)
    try:
        sdp = await call.answer(offer_sdp)
    except BaseException:
        await call.close("setup failed")
        raise
    registry.add(call)
    return call, sdp
