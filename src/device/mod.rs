//! The device certificate authority: identifiers, CSR checks and key policy, issuing, CA
//! material (local files or Secrets Manager), certificate storage behind one trait (local JSON
//! files or DynamoDB), and the client-certificate guard.

pub mod ca;
pub mod csr;
pub mod guard;
pub mod id;
pub mod material;
pub mod service;
pub mod settings;
pub mod store;
