"""A fake ESP32 on the command line: ``xiaozhi simulate``.

It drives a server exactly as the firmware does, through
:class:`xiaozhi_core.device.FakeDevice`; the shared pieces live in
:mod:`xiaozhi_core.sim.upstream` (audio in, DTX-like Opus out) and
:mod:`xiaozhi_core.sim.driver` (OTA bootstrap, a real-time microphone, turn records).
The load generator built on the same pieces (``xiaozhi bench``) is its own distribution,
``xiaozhi-bench``, under ``bench/``.
"""
