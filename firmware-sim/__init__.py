"""firmware-sim: a simulated plant of PLCs for lineside's tests, benchmarks and demo.

Machine models (stamping press, cement mill, loom) are deterministic state machines driven by a
clock and a seed; their values are served over Modbus TCP, Modbus RTU on a pseudo-terminal and
OPC UA, with fault injection. Register and node maps are data (profiles/*.toml) that the agent's
`lineside init` reuses, so both sides share one truth.
"""
