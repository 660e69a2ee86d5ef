//! HTTP routes, one file per area. Handlers are thin: parse, call the domain, map the answer.

pub mod device;
pub mod health;
pub mod oauth;
pub mod provider_config;
