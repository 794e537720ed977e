//! What Cola tells its operators: logs and request spans (`telemetry`),
//! and the Prometheus metrics (`metrics`).

pub(crate) mod metrics;
pub(crate) mod telemetry;
