//! The usage section: how often counted uses are written
//! (`COLA_USAGE_FLUSH_INTERVAL_MS`).

use std::time::Duration;

use super::reader::Reader;

#[derive(Debug, Clone)]
pub struct UsageSettings {
    pub flush_interval: Duration,
}

impl UsageSettings {
    pub(super) fn read(read: &mut Reader<'_>) -> Self {
        Self {
            flush_interval: Duration::from_millis(read.number(
                "COLA_USAGE_FLUSH_INTERVAL_MS",
                5000,
                (10, 3_600_000),
            )),
        }
    }

    pub(super) fn describe(&self) -> Vec<(&'static str, String)> {
        vec![(
            "COLA_USAGE_FLUSH_INTERVAL_MS",
            self.flush_interval.as_millis().to_string(),
        )]
    }
}
