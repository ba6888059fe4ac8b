"""One device conversation: the session (protocol state machine), its ordered audio lane,
the shared audio hub, segmentation, the turn, and the seams to the layers around it —
:class:`~xiaozhi_core.session.transport.Transport` below (the connection) and
:class:`~xiaozhi_core.session.host.SessionHost` above (what the server provides).

The session layer imports nothing from :mod:`xiaozhi_core.gateway`.
"""
