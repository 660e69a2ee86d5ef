//! The OAuth 2.0 broker's domain, free of HTTP-framework types: providers and their endpoints,
//! the sealed state that carries an authorization from `/authorize` to `/token`, PKCE, the
//! redirect allowlist, client credentials (environment or Secrets Manager) and the traced
//! provider client.

pub mod broker;
pub mod client;
pub mod credentials;
pub mod pkce;
pub mod provider;
pub mod redirect;
pub mod settings;
pub mod state;
