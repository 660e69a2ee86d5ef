//! An App Attest stand-in: a root, an intermediate and per-key leaf certificates made by the
//! test, shaped as Apple makes them (leaf with the nonce extension `1.2.840.113635.100.8.2`,
//! `authData` with the RP ID hash, counter, AAGUID and credential id), and assertions signed
//! by the attested key. The backend trusts the root by configuration
//! (`APP_ATTEST_ROOT_CA_PEM`), as it trusts Apple's in deployments.

use ciborium::Value;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, CustomExtension, DnType, IsCa, KeyPair,
    PKCS_ECDSA_P256_SHA256, PKCS_ECDSA_P384_SHA384, SigningKey,
};
use sha2::{Digest, Sha256};

const NONCE_OID: [u64; 7] = [1, 2, 840, 113_635, 100, 8, 2];

/// A test root and intermediate for one app.
pub struct AppAttestDouble {
    root: CertifiedIssuer<'static, KeyPair>,
    intermediate: CertifiedIssuer<'static, KeyPair>,
    rp_id_hash: [u8; 32],
    aaguid: [u8; 16],
}

/// A key the double attested: what the app keeps.
pub struct DeviceKey {
    pair: KeyPair,
    /// SHA-256 of the public key (the app's key id).
    pub key_id: [u8; 32],
}

fn ca(name: &str) -> CertificateParams {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("no names");
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params
}

impl AppAttestDouble {
    /// For the app `<team_id>.<bundle_id>`, keys of a development build (`development`) or of
    /// a production one.
    pub fn new(team_id: &str, bundle_id: &str, development: bool) -> Self {
        let root_key = KeyPair::generate_for(&PKCS_ECDSA_P384_SHA384).expect("P-384 key");
        let mut root_params = ca("Test App Attestation Root CA");
        root_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let root = CertifiedIssuer::self_signed(root_params, root_key).expect("root");
        let intermediate_key = KeyPair::generate_for(&PKCS_ECDSA_P384_SHA384).expect("P-384 key");
        let intermediate =
            CertifiedIssuer::signed_by(ca("Test App Attestation CA 1"), intermediate_key, &root)
                .expect("intermediate");
        let aaguid = if development {
            *b"appattestdevelop"
        } else {
            *b"appattest\0\0\0\0\0\0\0"
        };
        Self {
            root,
            intermediate,
            rp_id_hash: Sha256::digest(format!("{team_id}.{bundle_id}")).into(),
            aaguid,
        }
    }

    /// The root to trust, PEM.
    pub fn root_pem(&self) -> String {
        self.root.pem()
    }

    /// A new key, as `DCAppAttestService.generateKey` makes one.
    pub fn generate_key(&self) -> DeviceKey {
        let pair = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).expect("P-256 key");
        let key_id = Sha256::digest(pair.public_key_raw()).into();
        DeviceKey { pair, key_id }
    }

    /// The attestation object of `key` over `client_data_hash`, as
    /// `DCAppAttestService.attestKey` returns it (CBOR).
    pub fn attest(&self, key: &DeviceKey, client_data_hash: &[u8; 32]) -> Vec<u8> {
        self.attest_with(key, client_data_hash, |_| {})
    }

    /// [`attest`](Self::attest), with `edit` changing `authData` before the nonce is made (a
    /// counter that is not 0, another RP ID hash, ...).
    pub fn attest_with(
        &self,
        key: &DeviceKey,
        client_data_hash: &[u8; 32],
        edit: impl FnOnce(&mut Vec<u8>),
    ) -> Vec<u8> {
        let point = key.pair.public_key_raw();
        let mut auth_data = Vec::new();
        auth_data.extend_from_slice(&self.rp_id_hash);
        auth_data.push(0x40);
        auth_data.extend_from_slice(&0u32.to_be_bytes());
        auth_data.extend_from_slice(&self.aaguid);
        auth_data.extend_from_slice(&32u16.to_be_bytes());
        auth_data.extend_from_slice(&key.key_id);
        let cose = Value::Map(vec![
            (Value::Integer(1.into()), Value::Integer(2.into())),
            (Value::Integer(3.into()), Value::Integer((-7).into())),
            (Value::Integer((-1).into()), Value::Integer(1.into())),
            (
                Value::Integer((-2).into()),
                Value::Bytes(point[1..33].to_vec()),
            ),
            (
                Value::Integer((-3).into()),
                Value::Bytes(point[33..65].to_vec()),
            ),
        ]);
        ciborium::into_writer(&cose, &mut auth_data).expect("COSE key");
        edit(&mut auth_data);

        let nonce = Sha256::new()
            .chain_update(&auth_data)
            .chain_update(client_data_hash)
            .finalize();
        let mut extension = vec![0x30, 0x24, 0xa1, 0x22, 0x04, 0x20];
        extension.extend_from_slice(&nonce);
        let mut leaf = CertificateParams::new(Vec::<String>::new()).expect("no names");
        leaf.distinguished_name
            .push(DnType::CommonName, hex(&key.key_id));
        leaf.custom_extensions = vec![CustomExtension::from_oid_content(&NONCE_OID, extension)];
        let leaf = leaf
            .signed_by(&key.pair, &self.intermediate)
            .expect("leaf certificate");

        let object = Value::Map(vec![
            (
                Value::Text("fmt".into()),
                Value::Text("apple-appattest".into()),
            ),
            (
                Value::Text("attStmt".into()),
                Value::Map(vec![
                    (
                        Value::Text("x5c".into()),
                        Value::Array(vec![
                            Value::Bytes(leaf.der().to_vec()),
                            Value::Bytes(self.intermediate.der().to_vec()),
                        ]),
                    ),
                    (
                        Value::Text("receipt".into()),
                        Value::Bytes(b"receipt".to_vec()),
                    ),
                ]),
            ),
            (Value::Text("authData".into()), Value::Bytes(auth_data)),
        ]);
        let mut bytes = Vec::new();
        ciborium::into_writer(&object, &mut bytes).expect("attestation object");
        bytes
    }

    /// An assertion by `key` with `counter` over `client_data_hash`, as
    /// `DCAppAttestService.generateAssertion` returns it (CBOR).
    pub fn assert(&self, key: &DeviceKey, counter: u32, client_data_hash: &[u8; 32]) -> Vec<u8> {
        let mut authenticator_data = Vec::new();
        authenticator_data.extend_from_slice(&self.rp_id_hash);
        authenticator_data.push(0x00);
        authenticator_data.extend_from_slice(&counter.to_be_bytes());
        let nonce = Sha256::new()
            .chain_update(&authenticator_data)
            .chain_update(client_data_hash)
            .finalize();
        let signature = key.pair.sign(&nonce).expect("signature");
        let object = Value::Map(vec![
            (Value::Text("signature".into()), Value::Bytes(signature)),
            (
                Value::Text("authenticatorData".into()),
                Value::Bytes(authenticator_data),
            ),
        ]);
        let mut bytes = Vec::new();
        ciborium::into_writer(&object, &mut bytes).expect("assertion object");
        bytes
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
