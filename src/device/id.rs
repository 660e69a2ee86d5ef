//! Identifiers that can only hold valid values: [`DeviceId`] (5–128 of `[A-Za-z0-9_-]`, so it is
//! also safe as a file name), [`Serial`] (32 uppercase hex digits) and [`Platform`].

use serde::{Deserialize, Serialize};

/// A device id: 5 to 128 characters of `A-Z a-z 0-9 _ -`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct DeviceId(String);

impl DeviceId {
    pub fn parse(raw: &str) -> Result<Self, String> {
        let len = raw.chars().count();
        if !(5..=128).contains(&len) {
            return Err(format!(
                "device_id must be 5 to 128 characters long (got {len})"
            ));
        }
        if !raw
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            return Err("device_id may only contain A-Z, a-z, 0-9, '_' and '-'".to_owned());
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for DeviceId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for DeviceId {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(deserializer)?;
        Self::parse(&raw).map_err(serde::de::Error::custom)
    }
}

/// A certificate serial: 32 hex digits, kept uppercase (accepted in either case).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct Serial(String);

impl Serial {
    pub fn parse(raw: &str) -> Result<Self, String> {
        if raw.len() == 32 && raw.bytes().all(|b| b.is_ascii_hexdigit()) {
            Ok(Self(raw.to_ascii_uppercase()))
        } else {
            Err("serial must be 32 hexadecimal digits".to_owned())
        }
    }

    /// From the DER integer bytes of a certificate serial (leading zero bytes dropped).
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        let trimmed: Vec<u8> = bytes.iter().copied().skip_while(|b| *b == 0).collect();
        if trimmed.len() > 16 {
            return None;
        }
        let hex: String = trimmed.iter().map(|b| format!("{b:02X}")).collect();
        Some(Self(format!("{hex:0>32}")))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for Serial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Serial {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(deserializer)?;
        Self::parse(&raw).map_err(serde::de::Error::custom)
    }
}

/// The client platform; decides the certificate lifetime.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
#[schema(as = DevicePlatform)]
pub enum Platform {
    Android,
    Ios,
    Desktop,
    Web,
}

impl Platform {
    /// Case-insensitive: `Android` and `android` are the same platform.
    pub fn parse(raw: &str) -> Result<Self, String> {
        match raw.trim().to_ascii_lowercase().as_str() {
            "android" => Ok(Self::Android),
            "ios" => Ok(Self::Ios),
            "desktop" => Ok(Self::Desktop),
            "web" => Ok(Self::Web),
            _ => Err("platform must be one of android, ios, desktop, web".to_owned()),
        }
    }

    /// Certificate lifetime in days (spec §4.3).
    pub fn validity_days(self) -> i64 {
        match self {
            Self::Android | Self::Ios => 30,
            Self::Desktop => 7,
            Self::Web => 1,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Android => "android",
            Self::Ios => "ios",
            Self::Desktop => "desktop",
            Self::Web => "web",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_ids_are_safe_names() {
        assert!(DeviceId::parse("device-abc_123").is_ok());
        for bad in [
            "abcd",
            "../../etc/passwd",
            "a/b/c/d/e",
            "dev ice",
            "dévice",
            &"a".repeat(129),
        ] {
            assert!(DeviceId::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn serials_are_normalised() {
        let s = Serial::parse("95d3c96c901ad24667f1f0ddc740912f").unwrap();
        assert_eq!(s.as_str(), "95D3C96C901AD24667F1F0DDC740912F");
        assert!(Serial::parse("invalid-serial-123").is_err());
        assert_eq!(
            Serial::from_bytes(&[0, 0x01, 0xAB]).unwrap().as_str(),
            "000000000000000000000000000001AB"
        );
    }

    #[test]
    fn platforms_are_case_insensitive_with_their_lifetimes() {
        assert_eq!(Platform::parse("Android").unwrap(), Platform::Android);
        assert_eq!(Platform::parse("desktop").unwrap().validity_days(), 7);
        assert_eq!(Platform::Web.validity_days(), 1);
        assert!(Platform::parse("invalid_platform").is_err());
    }
}
