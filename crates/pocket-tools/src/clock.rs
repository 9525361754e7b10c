//! `time`: the current date and time.

use pocket_agent::{Tool, ToolContext, ToolError};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use time::format_description::well_known::Rfc3339;
use time::{OffsetDateTime, UtcOffset};

/// Arguments of [`CurrentTime`].
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TimeArgs {
    /// Optional UTC offset for local time, like `+02:00`, `-05:30` or `Z`. Omit it for UTC only.
    #[serde(default)]
    pub timezone_offset: Option<String>,
}

/// What [`CurrentTime`] returns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimeOutput {
    /// Now in UTC, RFC 3339 (`2025-01-31T12:00:00Z`).
    pub utc: String,
    /// Now as Unix seconds.
    pub unix: i64,
    /// Now at the requested offset, RFC 3339 (`2025-01-31T14:00:00+02:00`); only when an
    /// offset was given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local: Option<String>,
    /// The day of the week at the requested offset (UTC without one), e.g. `Friday`.
    pub weekday: String,
}

/// The `time` tool: the current date and time in UTC, and at an offset if asked.
///
/// [`Risk::Safe`](pocket_agent::Risk::Safe) and idempotent (retrying it is harmless). The
/// machine's own time zone is not used: reading it is not thread-safe on Unix, and the
/// model should say which offset it wants.
#[derive(Debug, Clone, Default)]
pub struct CurrentTime {
    _private: (),
}

impl CurrentTime {
    /// The time tool.
    pub fn new() -> Self {
        Self::default()
    }

    /// The answer for the instant `now`.
    ///
    /// # Errors
    /// [`ToolError::InvalidArguments`] when the offset is not like `+02:00`.
    pub fn at(now: OffsetDateTime, args: &TimeArgs) -> Result<TimeOutput, ToolError> {
        let utc = now
            .to_offset(UtcOffset::UTC)
            .replace_nanosecond(0)
            .map_err(|e| ToolError::failed(format!("cannot represent the current time: {e}")))?;
        let local = match &args.timezone_offset {
            Some(raw) => Some(utc.to_offset(parse_offset(raw)?)),
            None => None,
        };
        let format = |t: OffsetDateTime| {
            t.format(&Rfc3339)
                .map_err(|e| ToolError::failed(format!("cannot format the current time: {e}")))
        };
        Ok(TimeOutput {
            utc: format(utc)?,
            unix: utc.unix_timestamp(),
            local: local.map(format).transpose()?,
            weekday: local.unwrap_or(utc).weekday().to_string(),
        })
    }
}

impl Tool for CurrentTime {
    type Args = TimeArgs;
    type Output = TimeOutput;

    fn name(&self) -> &str {
        "time"
    }

    fn description(&self) -> &str {
        "Returns the current date and time: UTC in RFC 3339, Unix seconds, the weekday, and \
         the local time at `timezone_offset` (like +02:00) when given."
    }

    fn idempotent(&self) -> bool {
        true
    }

    async fn call(&self, args: TimeArgs, _ctx: &ToolContext) -> Result<TimeOutput, ToolError> {
        Self::at(OffsetDateTime::now_utc(), &args)
    }
}

/// Parses `Z`, `UTC`, `+HH`, `+HHMM` or `+HH:MM` (and `-`).
fn parse_offset(raw: &str) -> Result<UtcOffset, ToolError> {
    let bad = || {
        ToolError::invalid_arguments(format!(
            "timezone_offset `{raw}` is not an offset like `+02:00`, `-05:30` or `Z`"
        ))
    };
    let s = raw.trim();
    if s.eq_ignore_ascii_case("z") || s.eq_ignore_ascii_case("utc") {
        return Ok(UtcOffset::UTC);
    }
    let (sign, rest) = match s.as_bytes().first() {
        Some(b'+') => (1i8, &s[1..]),
        Some(b'-') => (-1i8, &s[1..]),
        _ => return Err(bad()),
    };
    let digits: String = rest.chars().filter(|c| *c != ':').collect();
    let colons = rest.chars().filter(|c| *c == ':').count();
    let valid_shape = match (digits.len(), colons) {
        (2, 0) | (4, 0) => true,
        (4, 1) => rest.len() == 5 && rest.as_bytes()[2] == b':',
        _ => false,
    };
    if !valid_shape || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let hours: i8 = digits[..2].parse().map_err(|_| bad())?;
    let minutes: i8 = digits.get(2..4).unwrap_or("0").parse().map_err(|_| bad())?;
    if hours > 14 || minutes > 59 {
        return Err(bad());
    }
    UtcOffset::from_hms(sign * hours, sign * minutes, 0).map_err(|_| bad())
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn args(offset: Option<&str>) -> TimeArgs {
        TimeArgs {
            timezone_offset: offset.map(String::from),
        }
    }

    #[test]
    fn utc_only_without_offset() {
        let now = datetime!(2025-01-31 12:34:56.789 UTC);
        let out = CurrentTime::at(now, &args(None)).unwrap();
        assert_eq!(
            out,
            TimeOutput {
                utc: "2025-01-31T12:34:56Z".into(),
                unix: 1_738_326_896,
                local: None,
                weekday: "Friday".into(),
            }
        );
    }

    #[test]
    fn local_at_the_offset() {
        let now = datetime!(2025-01-31 23:30:00 UTC);
        let out = CurrentTime::at(now, &args(Some("+02:00"))).unwrap();
        assert_eq!(out.local.as_deref(), Some("2025-02-01T01:30:00+02:00"));
        assert_eq!(out.weekday, "Saturday");
        let out = CurrentTime::at(now, &args(Some("-0530"))).unwrap();
        assert_eq!(out.local.as_deref(), Some("2025-01-31T18:00:00-05:30"));
        let out = CurrentTime::at(now, &args(Some("Z"))).unwrap();
        assert_eq!(out.local.as_deref(), Some("2025-01-31T23:30:00Z"));
        let out = CurrentTime::at(now, &args(Some("+09"))).unwrap();
        assert_eq!(out.local.as_deref(), Some("2025-02-01T08:30:00+09:00"));
    }

    #[test]
    fn bad_offsets_are_invalid_arguments() {
        let now = datetime!(2025-01-31 12:00:00 UTC);
        for bad in [
            "02:00",
            "+2",
            "+25:00",
            "+02:60",
            "Europe/Paris",
            "+0:200",
            "",
        ] {
            let err = CurrentTime::at(now, &args(Some(bad))).unwrap_err();
            assert!(
                matches!(err, ToolError::InvalidArguments { .. }),
                "{bad}: {err}"
            );
            assert!(err.to_string().contains(&format!("`{bad}`")), "{err}");
        }
    }
}
