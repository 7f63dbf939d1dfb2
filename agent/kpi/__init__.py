"""KPI engine: OEE (classic) and the ISO 22400-2 KPIs per machine, line and window.

The pure core lives here: `states` (machine states to time categories), `counters` (deltas that
survive rollover and resets), `calendar` (planned time and hour/shift/day windows), `formulas`
(the KPI maths on summed components) and `losses` (six big losses, downtime Pareto). The engine
that feeds them from readings is built on top; definitions are in docs/kpi.md.
"""
