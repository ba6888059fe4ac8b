"""Developer tools: ``xiaozhi simulate`` (a command-line fake ESP32) and ``xiaozhi bench``
(a load generator that reports ingest, turn, idle-memory and churn numbers).

Both drive a server exactly as the firmware does, through
:class:`xiaozhi_core.device.FakeDevice`; the shared pieces live in
:mod:`xiaozhi_core.tools.upstream` (audio in, DTX-like Opus out) and
:mod:`xiaozhi_core.tools.driver` (OTA bootstrap, a real-time microphone, turn records).
"""
