//! Device attestation (spec §2.15, §5; issue 27): evidence that a request comes from a genuine
//! build of the app on a genuine device, and the enrollment it guards.
//!
//! This module owns the attestation domain: the platforms that can attest ([`Platform`]), the
//! single-use challenges an attestation must commit to ([`challenge`]), each platform's
//! verification ([`play_integrity`], [`app_attest`], [`desktop`]), the verdicts ([`verdict`]) and what is
//! remembered of them ([`store`]), the service the routes call ([`service`]), and the
//! settings ([`settings`]). A client-chosen nonce proves nothing (it can be replayed), so every
//! attestation answers a challenge this backend sealed for that device and platform, used at
//! most once across every process ([`crate::single_use`]).

pub mod app_attest;
pub mod challenge;
pub mod desktop;
pub mod play_integrity;
pub mod service;
pub mod settings;
pub mod store;
pub mod verdict;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A platform that attests: Play Integrity on Android, App Attest on iOS, a bound fingerprint
/// on desktop (no platform attestation exists there). The web has none.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
#[schema(as = AttestationPlatform)]
pub enum Platform {
    Android,
    Ios,
    Desktop,
}

impl Platform {
    pub fn parse(raw: &str) -> Result<Self, String> {
        match raw.trim().to_ascii_lowercase().as_str() {
            "android" => Ok(Self::Android),
            "ios" => Ok(Self::Ios),
            "desktop" => Ok(Self::Desktop),
            _ => Err("platform must be one of android, ios, desktop".to_owned()),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Android => "android",
            Self::Ios => "ios",
            Self::Desktop => "desktop",
        }
    }
}
