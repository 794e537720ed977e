//! The telemetry section: the log's format (`COLA_LOG_FORMAT`) and filter
//! (`RUST_LOG`).

use super::reader::Reader;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Pretty,
    Json,
}

#[derive(Debug, Clone)]
pub struct TelemetrySettings {
    pub log_format: LogFormat,
    pub log_filter: String,
}

impl TelemetrySettings {
    pub(super) fn read(read: &mut Reader<'_>) -> Self {
        let log_format = match read.text("COLA_LOG_FORMAT").as_deref().map(str::trim) {
            None | Some("pretty") => LogFormat::Pretty,
            Some("json") => LogFormat::Json,
            Some(_) => {
                read.fail("COLA_LOG_FORMAT", "must be `pretty` or `json`");
                LogFormat::Pretty
            }
        };
        let log_filter = read.text("RUST_LOG").unwrap_or_else(|| "info".to_owned());
        if tracing_subscriber::EnvFilter::try_new(&log_filter).is_err() {
            read.fail("RUST_LOG", "is not a valid tracing filter");
        }
        Self {
            log_format,
            log_filter,
        }
    }

    pub(super) fn describe(&self) -> Vec<(&'static str, String)> {
        let format = match self.log_format {
            LogFormat::Pretty => "pretty",
            LogFormat::Json => "json",
        };
        vec![
            ("COLA_LOG_FORMAT", format.to_owned()),
            ("RUST_LOG", self.log_filter.clone()),
        ]
    }
}
