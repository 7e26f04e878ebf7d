//! The JSON configuration (see README.md).

use serde::Deserialize;

use crate::global::GlobalConfig;

/// What requests are counted together.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub(crate) enum Key {
    /// The client's IP address (`source.address` without the port).
    Source,
    /// The value of a request header; requests without it share one bucket.
    Header(String),
}

/// The whole plugin configuration.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Config {
    /// Tokens added per second.
    pub(crate) rate: f64,
    /// Most tokens a bucket holds: the requests allowed in a burst.
    pub(crate) burst: u32,
    #[serde(default = "default_key")]
    pub(crate) key: Key,
    /// How often the refill clock advances, in milliseconds.
    #[serde(default = "default_tick_ms")]
    pub(crate) tick_ms: u32,
    /// Buckets: keys are hashed onto this many, so the filter's shared data stays bounded
    /// whatever the number of clients (keys that collide share a bucket).
    #[serde(default = "default_slots")]
    pub(crate) slots: u32,
}

fn default_key() -> Key {
    Key::Source
}

fn default_tick_ms() -> u32 {
    100
}

fn default_slots() -> u32 {
    4096
}

/// The configuration of either mode, chosen by `"mode"`: `"local"` (the default) or `"global"`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Mode {
    Local(Config),
    Global(GlobalConfig),
}

/// Parses and checks a configuration of either mode.
///
/// # Errors
/// The reason: invalid JSON, an unknown mode or key, or a value out of range.
pub(crate) fn parse_mode(bytes: &[u8]) -> Result<Mode, String> {
    let mut value: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    let mode = match value.as_object_mut().and_then(|o| o.remove("mode")) {
        None => "local".to_owned(),
        Some(serde_json::Value::String(mode)) => mode,
        Some(other) => {
            return Err(format!(
                "`mode` must be \"local\" or \"global\", not {other}"
            ));
        }
    };
    match mode.as_str() {
        "local" => Config::from_value(value).map(Mode::Local),
        "global" => serde_json::from_value::<GlobalConfig>(value)
            .map_err(|e| e.to_string())?
            .check()
            .map(Mode::Global),
        other => Err(format!(
            "`mode` must be \"local\" or \"global\", not {other:?}"
        )),
    }
}

/// Most buckets: well under the host's default key cap per namespace (100,000).
const MAX_SLOTS: u32 = 50_000;

impl Config {
    /// Parses and checks the configuration.
    ///
    /// # Errors
    /// The reason: invalid JSON, an unknown key, or a value out of range.
    #[cfg(test)]
    pub(crate) fn parse(bytes: &[u8]) -> Result<Config, String> {
        let value = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        Config::from_value(value)
    }

    /// As [`Config::parse`], from parsed JSON.
    fn from_value(value: serde_json::Value) -> Result<Config, String> {
        let config: Config = serde_json::from_value(value).map_err(|e| e.to_string())?;
        if !(config.rate.is_finite() && config.rate > 0.0) {
            return Err("`rate` must be a positive number of tokens per second".into());
        }
        if config.burst == 0 {
            return Err("`burst` must be at least 1".into());
        }
        if !(10..=60_000).contains(&config.tick_ms) {
            return Err("`tick_ms` must be between 10 and 60000".into());
        }
        if !(1..=MAX_SLOTS).contains(&config.slots) {
            return Err(format!("`slots` must be between 1 and {MAX_SLOTS}"));
        }
        if let Key::Header(name) = &config.key
            && name.is_empty()
        {
            return Err("`key.header` must name a header".into());
        }
        Ok(config)
    }

    /// Thousandths of a token added per tick (at least 1).
    pub(crate) fn refill_per_tick(&self) -> u64 {
        let per_tick = self.rate * f64::from(self.tick_ms);
        // Saturating float-to-int conversion; a tiny rate still refills.
        (per_tick.round() as u64).max(1)
    }

    /// A full bucket, in thousandths of a token.
    pub(crate) fn capacity(&self) -> u64 {
        u64::from(self.burst) * crate::bucket::TOKEN
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_reads_defaults_and_keys() {
        let c = Config::parse(br#"{"rate": 2, "burst": 5}"#).unwrap();
        assert_eq!(
            (c.key.clone(), c.tick_ms, c.slots),
            (Key::Source, 100, 4096)
        );
        assert_eq!(c.refill_per_tick(), 200, "2/s over 100 ms is 0.2 token");
        assert_eq!(c.capacity(), 5000);
        let c = Config::parse(
            br#"{"rate": 0.5, "burst": 1, "key": {"header": "x-api-key"}, "tick_ms": 1000, "slots": 10}"#,
        )
        .unwrap();
        assert_eq!(c.key, Key::Header("x-api-key".into()));
        assert_eq!(c.refill_per_tick(), 500);
    }

    #[test]
    fn mode_chooses_the_schema() {
        assert!(matches!(
            parse_mode(br#"{"rate": 1, "burst": 1}"#),
            Ok(Mode::Local(_))
        ));
        assert!(matches!(
            parse_mode(br#"{"mode": "local", "rate": 1, "burst": 1}"#),
            Ok(Mode::Local(_))
        ));
        assert!(matches!(
            parse_mode(br#"{"mode": "global", "limit": 3, "window_ms": 1000, "upstream": "w"}"#),
            Ok(Mode::Global(_))
        ));
        for bad in [
            &br#"{"mode": "cluster", "rate": 1, "burst": 1}"#[..],
            br#"{"mode": 1, "rate": 1, "burst": 1}"#,
            br#"{"mode": "global", "rate": 1, "burst": 1}"#,
            br#"{"mode": "local", "limit": 3, "window_ms": 1000, "upstream": "w"}"#,
        ] {
            assert!(parse_mode(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn parse_rejects_bad_values() {
        for bad in [
            &br#"{"rate": 0, "burst": 1}"#[..],
            br#"{"rate": -1, "burst": 1}"#,
            br#"{"rate": 1, "burst": 0}"#,
            br#"{"rate": 1, "burst": 1, "tick_ms": 1}"#,
            br#"{"rate": 1, "burst": 1, "slots": 0}"#,
            br#"{"rate": 1, "burst": 1, "key": {"header": ""}}"#,
            br#"{"rate": 1, "burst": 1, "key": "cookie"}"#,
            br#"{"rate": 1, "burst": 1, "extra": true}"#,
            br#"{"burst": 1}"#,
            b"not json",
        ] {
            assert!(
                Config::parse(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
