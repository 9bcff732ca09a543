//! Query-string parsing and validation: list filters, paging, cursors, time zones.
//!
//! Every rejection names the parameter and says what is accepted; the handler turns
//! it into a 400.

use crate::record::CallStatus;
use crate::store::summary::{tag, Filter};
use crate::store::{PageRequest, Position};
use crate::timefmt::parse_rfc3339_us;

pub const MAX_LIMIT: usize = 200;
pub const DEFAULT_LIMIT: usize = 20;
pub const MAX_OFFSET: usize = 10_000;

/// A 400: which parameter, and what would have been accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("parameter {parameter}: {message}")]
pub struct ParamError {
    pub parameter: String,
    pub message: String,
}

pub fn bad(parameter: &str, message: impl Into<String>) -> ParamError {
    ParamError {
        parameter: parameter.to_string(),
        message: message.into(),
    }
}

/// Decoded `name=value` pairs in order.
#[derive(Debug, Clone, Default)]
pub struct Params {
    pairs: Vec<(String, String)>,
}

/// Where a parameter is read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamIn {
    Query,
    Path,
}

/// The value a parameter accepts, as the OpenAPI document states it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ParamKind {
    String,
    Boolean,
    Integer {
        min: u64,
        max: u64,
        default: Option<u64>,
    },
    Number {
        min: f64,
    },
    OneOf(&'static [&'static str]),
}

/// One accepted parameter: the name a handler reads, and its description. The
/// dispatcher rejects any query parameter its route does not list, so this is the
/// one definition of what an endpoint accepts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ParamSpec {
    pub name: &'static str,
    pub location: ParamIn,
    pub description: &'static str,
    pub kind: ParamKind,
}

impl ParamSpec {
    pub const fn query(name: &'static str, description: &'static str, kind: ParamKind) -> Self {
        ParamSpec {
            name,
            location: ParamIn::Query,
            description,
            kind,
        }
    }

    pub const fn text(name: &'static str, description: &'static str) -> Self {
        Self::query(name, description, ParamKind::String)
    }
}

const STATUSES: &[&str] = &[
    "success",
    "failed",
    "timeout",
    "rate_limited",
    "canceled",
    "unauthorized",
];

/// The list filters every list, export, stats and stream endpoint accepts.
pub const FILTER_PARAMS: &[ParamSpec] = &[
    ParamSpec::text(
        "agent",
        "agent name (x-llmtap-agent); repeatable or comma-separated, values ORed",
    ),
    ParamSpec::text("provider", "provider name, e.g. openai"),
    ParamSpec::text(
        "model",
        "model name, requested or answered (a call matches on either)",
    ),
    ParamSpec::query(
        "status",
        "call status; repeatable, values ORed",
        ParamKind::OneOf(STATUSES),
    ),
    ParamSpec::query(
        "trigger",
        "what started the run (x-llmtap-trigger); repeatable",
        ParamKind::OneOf(&["user", "system", "task"]),
    ),
    ParamSpec::text(
        "tenant",
        "tenant; a tenant-confined token may only pass its own",
    ),
    ParamSpec::text("user_id", "end user"),
    ParamSpec::text("session_id", "conversation session"),
    ParamSpec::text("prompt", "prompt name and version, e.g. summarise@v3"),
    ParamSpec::text(
        "task",
        "task id (x-llmtap-task-id); repeatable, values ORed",
    ),
    ParamSpec::text(
        "property.<key>",
        "property.KEY=VALUE matches x-llmtap-property-KEY",
    ),
    ParamSpec::query(
        "has_session",
        "records with (true) or without (false) a session",
        ParamKind::Boolean,
    ),
    ParamSpec::text("from", "inclusive; RFC 3339 or YYYY-MM-DD (UTC midnight)"),
    ParamSpec::text("to", "exclusive; RFC 3339 or YYYY-MM-DD"),
    ParamSpec::query(
        "min_cost",
        "minimum cost in USD",
        ParamKind::Number { min: 0.0 },
    ),
    ParamSpec::text(
        "q",
        "admin only: case-insensitive text in the system prompt or last user message",
    ),
];

pub const PAGE_PARAMS: &[ParamSpec] = &[
    ParamSpec::query(
        "limit",
        "page size",
        ParamKind::Integer {
            min: 1,
            max: MAX_LIMIT as u64,
            default: Some(DEFAULT_LIMIT as u64),
        },
    ),
    ParamSpec::text(
        "cursor",
        "next_cursor of the previous page (opaque; stable while records arrive)",
    ),
    ParamSpec::query(
        "offset",
        "alternative to cursor",
        ParamKind::Integer {
            min: 0,
            max: MAX_OFFSET as u64,
            default: Some(0),
        },
    ),
];

impl Params {
    pub fn parse(query: &str) -> Result<Params, ParamError> {
        let mut pairs = Vec::new();
        for part in query.split('&').filter(|p| !p.is_empty()) {
            let (name, value) = part.split_once('=').unwrap_or((part, ""));
            let name = percent_decode(name).ok_or_else(|| bad(name, "invalid percent-encoding"))?;
            let value =
                percent_decode(value).ok_or_else(|| bad(&name, "invalid percent-encoding"))?;
            pairs.push((name, value));
        }
        Ok(Params { pairs })
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn all(&self, name: &str) -> Vec<&str> {
        self.pairs
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// Rejects any query parameter not in `groups` (a `property.<key>` entry allows
    /// all `property.*`).
    pub fn only(&self, groups: &[&[ParamSpec]]) -> Result<(), ParamError> {
        let allowed: Vec<&str> = groups
            .iter()
            .flat_map(|g| g.iter())
            .filter(|p| p.location == ParamIn::Query)
            .map(|p| p.name)
            .collect();
        for (name, _) in &self.pairs {
            let ok = allowed.contains(&name.as_str())
                || (name.starts_with("property.")
                    && name.len() > "property.".len()
                    && allowed.contains(&"property.<key>"));
            if !ok {
                return Err(bad(
                    name,
                    format!("unknown parameter; accepted: {}", allowed.join(", ")),
                ));
            }
        }
        Ok(())
    }

    pub fn bool(&self, name: &str) -> Result<Option<bool>, ParamError> {
        match self.get(name) {
            None => Ok(None),
            Some("true") | Some("1") => Ok(Some(true)),
            Some("false") | Some("0") => Ok(Some(false)),
            Some(_) => Err(bad(name, "expected true or false")),
        }
    }

    pub fn time(&self, name: &str) -> Result<Option<u64>, ParamError> {
        match self.get(name) {
            None | Some("") => Ok(None),
            Some(v) => parse_rfc3339_us(v).map(Some).ok_or_else(|| {
                bad(
                    name,
                    format!("{v:?} is not a date; expected RFC 3339 (2026-04-05T14:28:55Z) or YYYY-MM-DD"),
                )
            }),
        }
    }

    pub fn usize_in(
        &self,
        name: &str,
        default: usize,
        min: usize,
        max: usize,
    ) -> Result<usize, ParamError> {
        match self.get(name) {
            None => Ok(default),
            Some(v) => match v.parse::<usize>() {
                Ok(n) if (min..=max).contains(&n) => Ok(n),
                _ => Err(bad(
                    name,
                    format!("expected an integer from {min} to {max}"),
                )),
            },
        }
    }
}

fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// The list filters. `q` is returned separately: the caller checks the role.
pub fn filter(params: &Params) -> Result<Filter, ParamError> {
    let mut f = Filter::default();
    for (name, t) in [
        ("agent", tag::AGENT),
        ("provider", tag::PROVIDER),
        ("model", tag::MODEL),
        ("status", tag::STATUS),
        ("trigger", tag::TRIGGER),
        ("tenant", tag::TENANT),
        ("user_id", tag::USER),
        ("session_id", tag::SESSION),
        ("prompt", tag::PROMPT),
        ("task", tag::TASK),
    ] {
        let values: Vec<String> = params
            .all(name)
            .into_iter()
            .flat_map(|v| v.split(','))
            .filter(|v| !v.is_empty())
            .map(str::to_string)
            .collect();
        if values.is_empty() {
            continue;
        }
        if t == tag::STATUS {
            for v in &values {
                if CallStatus::parse(v).is_none() {
                    return Err(bad(
                        "status",
                        format!("unknown status {v:?}; accepted: success, failed, timeout, rate_limited, canceled, unauthorized"),
                    ));
                }
            }
        }
        f.eq.push((t, values));
    }
    for (name, value) in &params.pairs {
        if let Some(key) = name.strip_prefix("property.") {
            f.properties.push((key.to_string(), value.clone()));
        }
    }
    f.has_session = params.bool("has_session")?;
    f.from_us = params.time("from")?;
    f.to_us = params.time("to")?;
    if let (Some(a), Some(b)) = (f.from_us, f.to_us) {
        if a >= b {
            return Err(bad("to", "must be later than from"));
        }
    }
    if let Some(v) = params.get("min_cost") {
        let usd: f64 = v
            .parse()
            .ok()
            .filter(|x: &f64| x.is_finite() && *x >= 0.0)
            .ok_or_else(|| {
                bad(
                    "min_cost",
                    "expected a non-negative number of US dollars, e.g. 0.01",
                )
            })?;
        f.min_cost_pusd = Some((usd * 1e12).round() as u64);
    }
    if let Some(q) = params.get("q").filter(|q| !q.trim().is_empty()) {
        f.text = Some(q.trim().to_lowercase());
    }
    Ok(f)
}

pub fn page_request(params: &Params, count_total: bool) -> Result<PageRequest, ParamError> {
    let limit = params.usize_in("limit", DEFAULT_LIMIT, 1, MAX_LIMIT)?;
    let offset = params.usize_in("offset", 0, 0, MAX_OFFSET)?;
    let after = match params.get("cursor") {
        None | Some("") => None,
        Some(c) => Some(decode_cursor(c).ok_or_else(|| {
            bad(
                "cursor",
                "not a cursor from this API; pass next_cursor from a previous page unchanged",
            )
        })?),
    };
    if after.is_some() && offset > 0 {
        return Err(bad("offset", "use either cursor or offset, not both"));
    }
    Ok(PageRequest {
        limit,
        after,
        offset,
        count_total,
    })
}

/// Opaque cursor: `v1` then hex of time (16 digits) and id bytes.
pub fn encode_cursor(p: &Position) -> String {
    let mut out = format!("v1{:016x}", p.time_us);
    for b in p.id.as_bytes() {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

pub fn decode_cursor(text: &str) -> Option<Position> {
    let rest = text.strip_prefix("v1")?;
    if rest.len() < 18 || rest.len() % 2 != 0 || !rest.is_ascii() {
        return None;
    }
    let time_us = u64::from_str_radix(&rest[..16], 16).ok()?;
    let bytes: Option<Vec<u8>> = (16..rest.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&rest[i..i + 2], 16).ok())
        .collect();
    Some(Position {
        time_us,
        id: String::from_utf8(bytes?).ok()?,
    })
}

/// `tz`: `Z`, `UTC`, a fixed offset `+HH:MM` / `-HH:MM` (a multiple of 15 minutes;
/// a `+` sent unencoded arrives as a space and is read as `+`), or an IANA zone name
/// such as `Europe/Berlin`.
pub fn time_zone(params: &Params) -> Result<jiff::tz::TimeZone, ParamError> {
    let Some(tz) = params.get("tz").filter(|t| !t.is_empty()) else {
        return Ok(jiff::tz::TimeZone::UTC);
    };
    if tz == "Z" || tz.eq_ignore_ascii_case("utc") {
        return Ok(jiff::tz::TimeZone::UTC);
    }
    let err = || {
        bad(
            "tz",
            "expected UTC, a fixed offset like +02:00 or -05:30 (a multiple of 15 minutes), or a zone name like Europe/Berlin",
        )
    };
    let b = tz.as_bytes();
    if matches!(b.first(), Some(b'+' | b'-' | b' ')) {
        if b.len() != 6
            || b[3] != b':'
            || !tz[1..3]
                .bytes()
                .chain(tz[4..6].bytes())
                .all(|c| c.is_ascii_digit())
        {
            return Err(err());
        }
        let h: i32 = tz[1..3].parse().map_err(|_| err())?;
        let m: i32 = tz[4..6].parse().map_err(|_| err())?;
        if h > 14 || m % 15 != 0 || m > 45 {
            return Err(err());
        }
        let s = h * 3600 + m * 60;
        let s = if b[0] == b'-' { -s } else { s };
        let offset = jiff::tz::Offset::from_seconds(s).map_err(|_| err())?;
        return Ok(jiff::tz::TimeZone::fixed(offset));
    }
    jiff::tz::TimeZone::get(tz).map_err(|_| err())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_and_paging_are_validated() {
        let p = Params::parse("agent=a%20b&status=failed&status=timeout&property.env=prod&from=2026-01-01&min_cost=0.5&has_session=true").unwrap();
        p.only(&[FILTER_PARAMS, PAGE_PARAMS]).unwrap();
        let f = filter(&p).unwrap();
        assert_eq!(f.eq[0], (tag::AGENT, vec!["a b".to_string()]));
        assert_eq!(f.eq[1].1, vec!["failed", "timeout"]);
        assert_eq!(f.properties, vec![("env".into(), "prod".into())]);
        assert_eq!(f.min_cost_pusd, Some(500_000_000_000));
        assert_eq!(f.has_session, Some(true));
        for (q, param) in [
            ("bogus=1", "bogus"),
            ("status=ok", "status"),
            ("from=yesterday", "from"),
            ("limit=0", "limit"),
            ("limit=201", "limit"),
            ("offset=10001", "offset"),
            ("cursor=zzz", "cursor"),
            ("has_session=maybe", "has_session"),
            ("min_cost=-1", "min_cost"),
            ("from=2026-02-01&to=2026-01-01", "to"),
        ] {
            let p = Params::parse(q).unwrap();
            let e = p
                .only(&[FILTER_PARAMS, PAGE_PARAMS])
                .and_then(|_| filter(&p))
                .and_then(|_| page_request(&p, true))
                .unwrap_err();
            assert_eq!(e.parameter, param, "{q}");
        }
    }

    #[test]
    fn cursors_round_trip() {
        let p = Position {
            time_us: 123,
            id: "c_01ABC".into(),
        };
        assert_eq!(decode_cursor(&encode_cursor(&p)), Some(p));
        assert_eq!(decode_cursor("v1xyz"), None);
    }

    #[test]
    fn time_zones() {
        let now = crate::timefmt::parse_rfc3339_us("2026-01-15T12:00:00Z").unwrap();
        let tz = |v: &str| {
            time_zone(&Params::parse(&format!("tz={v}")).unwrap())
                .map(|z| crate::timefmt::start_of_day_us(now, &z).unwrap().1)
        };
        assert_eq!(tz("%2B02:00"), Ok(7200));
        // An unencoded `+` arrives as a space (issue 12 item 21).
        assert_eq!(tz("+02:00"), Ok(7200));
        assert_eq!(tz("-05:30"), Ok(-19800));
        assert_eq!(tz("UTC"), Ok(0));
        assert_eq!(tz("Europe/Paris"), Ok(3600));
        for bad in ["Mars", "+99:99", "+02:10", "+2:00", "Europe/Nowhere"] {
            assert_eq!(tz(bad).unwrap_err().parameter, "tz", "{bad}");
        }
    }
}
