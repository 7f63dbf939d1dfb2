"""MQTT sink with a Unified Namespace topic tree (config model; runtime with forwarding)."""
