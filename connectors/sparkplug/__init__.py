"""MQTT Sparkplug B 3.0 sink: births, data by alias, rebirth, primary host STATE."""
