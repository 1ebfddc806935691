//! How a route answers a submission.

use serde::Deserialize;
use std::str::FromStr;

/// How a submission is answered.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Reply once the vendor answered (bounded by `deadline`).
    Sync,
    /// Reply once stored; deliver in the background.
    #[default]
    Deferred,
    /// Wait up to `deadline` for the vendor, then reply with the current state.
    Auto,
}

impl Mode {
    /// The configuration (and storage) spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sync => "sync",
            Self::Deferred => "deferred",
            Self::Auto => "auto",
        }
    }
}

impl FromStr for Mode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "sync" => Ok(Self::Sync),
            "deferred" => Ok(Self::Deferred),
            "auto" => Ok(Self::Auto),
            other => Err(format!("unknown mode '{other}'")),
        }
    }
}
