"""MQTT sink with a Unified Namespace topic tree: config model now, runtime with the forwarding issue."""
