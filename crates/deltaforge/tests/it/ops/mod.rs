//! Operating DeltaForge: the monitoring files of `deploy/` (alert rules and
//! the Grafana dashboard) against the real binary and a real Prometheus.

mod prometheus;
