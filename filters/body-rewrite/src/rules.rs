//! The configuration: per side, literal replacements and a refusal pattern.

use serde::Deserialize;

/// The whole plugin configuration.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Config {
    /// Rules for request bodies; absent = request bodies pass untouched (and unbuffered).
    #[serde(default)]
    pub(crate) request: Option<Rules>,
    /// Rules for response bodies.
    #[serde(default)]
    pub(crate) response: Option<Rules>,
    /// Log each body callback's size (for debugging and tests).
    #[serde(default)]
    pub(crate) log_sizes: bool,
}

/// What to do with one side's body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Rules {
    /// `[from, to]` literal replacements, applied in order, every occurrence.
    #[serde(default)]
    pub(crate) replace: Vec<(String, String)>,
    /// Answer with `deny_status` instead when the body contains this.
    #[serde(default)]
    pub(crate) deny_if_contains: Option<String>,
    #[serde(default = "default_status")]
    pub(crate) deny_status: u32,
}

fn default_status() -> u32 {
    403
}

impl Config {
    pub(crate) fn parse(bytes: &[u8]) -> Result<Config, String> {
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(Config::default());
        }
        let config: Config = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        for rules in [&config.request, &config.response].into_iter().flatten() {
            if rules.replace.iter().any(|(from, _)| from.is_empty()) {
                return Err("a replacement's `from` is empty".into());
            }
            if !(200..=599).contains(&rules.deny_status) {
                return Err(format!(
                    "deny_status {} is not 200..=599",
                    rules.deny_status
                ));
            }
        }
        Ok(config)
    }
}

impl Rules {
    /// Whether a rewrite can change the body's length.
    pub(crate) fn may_change_length(&self) -> bool {
        self.replace.iter().any(|(from, to)| from.len() != to.len())
    }

    /// The rewritten body, or `None` if no rule matched.
    pub(crate) fn apply(&self, body: &[u8]) -> Option<Vec<u8>> {
        let mut current = body.to_vec();
        let mut changed = false;
        for (from, to) in &self.replace {
            let (from, to) = (from.as_bytes(), to.as_bytes());
            let mut out = Vec::with_capacity(current.len());
            let mut i = 0;
            while i < current.len() {
                if current[i..].starts_with(from) {
                    out.extend_from_slice(to);
                    i += from.len();
                    changed = true;
                } else {
                    out.push(current[i]);
                    i += 1;
                }
            }
            current = out;
        }
        changed.then_some(current)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replacements_apply_in_order_to_every_occurrence() {
        let config =
            Config::parse(br#"{"request": {"replace": [["a", "bb"], ["bb", "c"]]}}"#).unwrap();
        let rules = config.request.unwrap();
        assert_eq!(rules.apply(b"xax a").unwrap(), b"xcx c");
        assert_eq!(rules.apply(b"zzz"), None);
        assert!(rules.may_change_length());
    }

    #[test]
    fn invalid_configurations_are_refused() {
        assert!(Config::parse(br#"{"request": {"replace": [["", "x"]]}}"#).is_err());
        assert!(Config::parse(br#"{"request": {"deny_status": 99}}"#).is_err());
        assert!(Config::parse(br#"{"nope": 1}"#).is_err());
        assert!(Config::parse(b"  ").unwrap().request.is_none());
    }
}
