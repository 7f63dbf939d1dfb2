"""MQTT Sparkplug B 3.0 sink: config model now, runtime with the forwarding issue."""
