"""MQTT + UDP transport: embedded broker, UDP endpoint, per-session transports."""
