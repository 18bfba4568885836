//! Durations written as `250ms`, `5s`, `1m`, `2h` (Go/Kubernetes style).

use serde::{de, Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

/// A non-negative duration with millisecond precision, serialised as a string.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Duration(std::time::Duration);

impl Duration {
    pub fn from_millis(ms: u64) -> Self {
        Duration(std::time::Duration::from_millis(ms))
    }

    pub fn as_std(&self) -> std::time::Duration {
        self.0
    }

    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let split = text
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| format!("duration '{text}' needs a unit (ms, s, m or h)"))?;
        let (number, unit) = text.split_at(split);
        let value: f64 = number
            .parse()
            .map_err(|_| format!("'{text}' is not a duration like 250ms, 5s, 1m or 2h"))?;
        let millis_per_unit = match unit {
            "ms" => 1.0,
            "s" => 1_000.0,
            "m" => 60_000.0,
            "h" => 3_600_000.0,
            _ => {
                return Err(format!(
                    "unknown duration unit '{unit}' in '{text}' (use ms, s, m or h)"
                ))
            }
        };
        let millis = value * millis_per_unit;
        if !millis.is_finite() || millis > 1.0e12 {
            return Err(format!("duration '{text}' is too large"));
        }
        Ok(Duration::from_millis(millis.round() as u64))
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_millis();
        if ms == 0 {
            write!(f, "0s")
        } else if ms.is_multiple_of(3_600_000) {
            write!(f, "{}h", ms / 3_600_000)
        } else if ms.is_multiple_of(60_000) {
            write!(f, "{}m", ms / 60_000)
        } else if ms.is_multiple_of(1_000) {
            write!(f, "{}s", ms / 1_000)
        } else {
            write!(f, "{ms}ms")
        }
    }
}

impl std::str::FromStr for Duration {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Duration::parse(text)
    }
}

impl Serialize for Duration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Duration::parse(&text).map_err(de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_units() {
        for (text, ms, shown) in [
            ("250ms", 250, "250ms"),
            ("5s", 5_000, "5s"),
            ("1.5s", 1_500, "1500ms"),
            ("2m", 120_000, "2m"),
            ("1h", 3_600_000, "1h"),
        ] {
            let d = Duration::parse(text).expect(text);
            assert_eq!(d.as_std().as_millis(), ms);
            assert_eq!(d.to_string(), shown);
        }
    }

    #[test]
    fn rejects_garbage() {
        for text in ["", "5", "s", "5 days", "-1s", "1e400s"] {
            assert!(Duration::parse(text).is_err(), "{text} should fail");
        }
    }
}
