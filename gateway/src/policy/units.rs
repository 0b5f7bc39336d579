//! Value types policies are written in: rates (`20/s`), quotas (a rate and a burst) and byte
//! sizes (`64KiB`).

use std::str::FromStr;

use serde::{Deserialize, Deserializer};

/// A rate such as `1000/s`, `600/m` or `10000/h`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub count: u32,
    pub per_secs: u32,
}

impl FromStr for Rate {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let (n, unit) = s
            .split_once('/')
            .ok_or_else(|| format!("rate {s:?}: expected N/s, N/m or N/h"))?;
        let count: u32 = n.trim().parse().map_err(|_| format!("rate {s:?}: {n:?} is not a count"))?;
        if count == 0 {
            return Err(format!("rate {s:?}: count must be positive"));
        }
        let per_secs = match unit.trim() {
            "s" | "sec" | "second" => 1,
            "m" | "min" | "minute" => 60,
            "h" | "hour" => 3600,
            u => return Err(format!("rate {s:?}: unit {u:?} is not s, m or h")),
        };
        Ok(Rate { count, per_secs })
    }
}

impl<'de> Deserialize<'de> for Rate {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A token bucket: a sustained rate and the burst it may absorb.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Quota {
    pub rate: Rate,
    /// Defaults to the rate's count.
    pub burst: Option<u32>,
}

impl Quota {
    pub fn burst(&self) -> u32 {
        self.burst.unwrap_or(self.rate.count).max(1)
    }
    /// `RateLimit-Policy` form (draft-ietf-httpapi-ratelimit-headers): the quota is the
    /// rate's count per its window in seconds (`1000/s` is `q=1000;w=1`); the burst is how
    /// much of it may come at once, not the quota.
    pub fn header_policy(&self, name: &str) -> String {
        format!("\"{name}\";q={};w={}", self.rate.count, self.rate.per_secs.max(1))
    }
}

/// A byte size such as `64KiB`, `1MiB` or `4096`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteSize(pub usize);

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            N(u64),
            S(String),
        }
        let parse = |s: &str| -> std::result::Result<usize, String> {
            let s = s.trim();
            let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
            let (n, unit) = s.split_at(split);
            let n: usize = n.parse().map_err(|_| format!("size {s:?}: no number"))?;
            let mult = match unit.trim() {
                "" | "B" => 1,
                "KiB" | "KB" | "k" => 1024,
                "MiB" | "MB" | "M" => 1024 * 1024,
                u => return Err(format!("size {s:?}: unit {u:?} is not B, KiB or MiB")),
            };
            Ok(n * mult)
        };
        match Raw::deserialize(d)? {
            Raw::N(n) => Ok(ByteSize(n as usize)),
            Raw::S(s) => parse(&s).map(ByteSize).map_err(serde::de::Error::custom),
        }
    }
}
