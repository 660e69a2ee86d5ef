//! In-process tests of the router with its production layers, one binary (the crate is linked
//! once) with one set of helpers:
//!
//! - [`router`]: every route and error contract through the layer stack;
//! - [`oauth`]: the OAuth routes against provider doubles on 127.0.0.1 that check the protocol;
//! - [`rate_limit`]: server mode's per-client limits, 429 with `Retry-After`;
//! - [`fuzz`]: property-based tests over every parser of attacker input, and hostile requests
//!   through the router (never a 5xx, never a panic);
//! - [`device`]: the device CA with the local backend, issuance checked by independent tools
//!   (`openssl verify`, x509-parser), the key policy, and the client-certificate guard through a
//!   trusted proxy header.

use apuntador_harness as support;

mod helpers;

mod attestation;
mod device;
mod fuzz;
mod oauth;
mod rate_limit;
mod router;
