"""Modbus TCP and RTU: addresses, config, read planner, codec, and the source runtimes."""
