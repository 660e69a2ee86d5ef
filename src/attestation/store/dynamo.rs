//! Attestation state in DynamoDB (`AWS_ATTESTATION_TABLE`): one table keyed by the string
//! attribute `id`, one item per fact, every request a single-item call on a known key:
//!
//! | `id` | attributes | written by |
//! |---|---|---|
//! | `key#<device>` | `key_id` (B), `public_key` (B), `counter` (N) | `PutItem`; `UpdateItem` with `key_id = :k AND counter < :c` |
//! | `fingerprint#<device>` | `serial`, `fingerprint` | `PutItem` with `attribute_not_exists(id) OR serial <> :s` |
//! | `verdict#<device>#<platform>` | `verdict` (JSON of [`Verdict`]) | `PutItem` |
//! | `#cleared` | `at` (RFC 3339) | `PutItem` |
//! | `attempts#<device>#<hour>` | `attempts` (N), `expires_at` (N, time-to-live) | `UpdateItem` `ADD` |
//!
//! The conditions make each race atomic: one of two assertions with the same counter
//! advances it, one of two first attestations binds its fingerprint, and every attempt is
//! counted once. Reads are strongly consistent, so a sandbox sees what another just wrote.
//! The function's role may `GetItem`, `PutItem` and `UpdateItem` on this table only
//! (`template.yaml`). With `AUTO_CREATE_RESOURCES=true` (development) the table is created on
//! first use, without the time-to-live.

use std::collections::HashMap;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue};
use chrono::{DateTime, Utc};

use super::{AttestationStore, StoreError, StoreFuture};
use crate::attestation::Platform;
use crate::attestation::app_attest::AttestedKey;
use crate::attestation::desktop::Fingerprint;
use crate::attestation::verdict::Verdict;
use crate::aws::{AutoCreate, id_keyed_table};
use crate::device::id::{DeviceId, Serial};
use crate::telemetry::aws::{aws_error_text, traced};

/// The item that records the last clear-cache.
pub const CLEARED: &str = "#cleared";

#[derive(Debug)]
pub struct DynamoAttestations {
    client: Client,
    table: String,
    auto_create: AutoCreate,
}

fn backend(e: &(dyn std::error::Error + 'static)) -> StoreError {
    StoreError::Backend(aws_error_text(e))
}

fn s(value: impl Into<String>) -> AttributeValue {
    AttributeValue::S(value.into())
}

fn id(value: String) -> HashMap<String, AttributeValue> {
    HashMap::from([("id".to_owned(), s(value))])
}

fn key_id(device: &DeviceId) -> String {
    format!("key#{device}")
}

fn fingerprint_id(device: &DeviceId) -> String {
    format!("fingerprint#{device}")
}

fn verdict_id(device: &DeviceId, platform: Platform) -> String {
    format!("verdict#{device}#{}", platform.as_str())
}

fn attempts_id(device: &DeviceId, window: u64) -> String {
    format!("attempts#{device}#{window}")
}

fn text<'a>(item: &'a HashMap<String, AttributeValue>, name: &str) -> Result<&'a str, StoreError> {
    item.get(name)
        .and_then(|v| v.as_s().ok())
        .map(String::as_str)
        .ok_or_else(|| StoreError::Backend(format!("attestation item without {name}")))
}

fn number(item: &HashMap<String, AttributeValue>, name: &str) -> Result<u64, StoreError> {
    item.get(name)
        .and_then(|v| v.as_n().ok())
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| StoreError::Backend(format!("attestation item without {name}")))
}

fn conditional_failed<E>(error: &aws_sdk_dynamodb::error::SdkError<E>) -> bool
where
    E: aws_sdk_dynamodb::error::ProvideErrorMetadata,
{
    error
        .as_service_error()
        .and_then(|e| e.code())
        .is_some_and(|code| code == "ConditionalCheckFailedException")
}

impl DynamoAttestations {
    pub fn new(client: Client, table: String, auto_create: bool) -> Self {
        Self {
            client,
            table,
            auto_create: AutoCreate::new(auto_create),
        }
    }

    async fn ready(&self) -> Result<(), StoreError> {
        self.auto_create
            .ensure(&self.client, &self.table, "attestation", || {
                id_keyed_table(&self.client, &self.table)
            })
            .await
            .map_err(StoreError::Backend)
    }

    async fn get(
        &self,
        item_id: String,
    ) -> Result<Option<HashMap<String, AttributeValue>>, StoreError> {
        self.ready().await?;
        let request = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(id(item_id)))
            .consistent_read(true);
        let answer = traced("DynamoDB", "GetItem", request.send())
            .await
            .map_err(|e| backend(&e))?;
        Ok(answer.item)
    }

    async fn put(&self, item: HashMap<String, AttributeValue>) -> Result<(), StoreError> {
        self.ready().await?;
        let request = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item));
        traced("DynamoDB", "PutItem", request.send())
            .await
            .map(|_| ())
            .map_err(|e| backend(&e))
    }

    async fn advance(
        &self,
        device: &DeviceId,
        key: &[u8; 32],
        counter: u32,
    ) -> Result<bool, StoreError> {
        self.ready().await?;
        let request = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(id(key_id(device))))
            .update_expression("SET #counter = :c")
            .condition_expression("key_id = :k AND #counter < :c")
            .expression_attribute_names("#counter", "counter")
            .expression_attribute_values(":c", AttributeValue::N(counter.to_string()))
            .expression_attribute_values(":k", AttributeValue::B(Blob::new(key.to_vec())));
        match traced("DynamoDB", "UpdateItem", request.send()).await {
            Ok(_) => Ok(true),
            Err(e) if conditional_failed(&e) => Ok(false),
            Err(e) => Err(backend(&e)),
        }
    }

    async fn bind(
        &self,
        device: &DeviceId,
        serial: &Serial,
        fingerprint: &Fingerprint,
    ) -> Result<Fingerprint, StoreError> {
        self.ready().await?;
        let mut item = id(fingerprint_id(device));
        item.insert("serial".to_owned(), s(serial.as_str()));
        item.insert("fingerprint".to_owned(), s(fingerprint.as_str()));
        let request = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(id) OR serial <> :s")
            .expression_attribute_values(":s", s(serial.as_str()));
        match traced("DynamoDB", "PutItem", request.send()).await {
            Ok(_) => return Ok(fingerprint.clone()),
            Err(e) if conditional_failed(&e) => {}
            Err(e) => return Err(backend(&e)),
        }
        // Bound to this certificate already: the binding decides.
        let item = self
            .get(fingerprint_id(device))
            .await?
            .ok_or_else(|| StoreError::Backend("the fingerprint binding vanished".to_owned()))?;
        Fingerprint::parse(text(&item, "fingerprint")?).map_err(StoreError::Backend)
    }

    async fn count(
        &self,
        device: &DeviceId,
        window: u64,
        expires_at: u64,
    ) -> Result<u64, StoreError> {
        self.ready().await?;
        let request = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(id(attempts_id(device, window))))
            .update_expression("ADD attempts :one SET expires_at = :e")
            .expression_attribute_values(":one", AttributeValue::N("1".to_owned()))
            .expression_attribute_values(":e", AttributeValue::N(expires_at.to_string()))
            .return_values(ReturnValue::UpdatedNew);
        let answer = traced("DynamoDB", "UpdateItem", request.send())
            .await
            .map_err(|e| backend(&e))?;
        number(&answer.attributes.unwrap_or_default(), "attempts")
    }
}

impl AttestationStore for DynamoAttestations {
    fn key<'a>(&'a self, device: &'a DeviceId) -> StoreFuture<'a, Option<AttestedKey>> {
        Box::pin(async move {
            let Some(item) = self.get(key_id(device)).await? else {
                return Ok(None);
            };
            let bytes = |name: &str| {
                item.get(name)
                    .and_then(|v| v.as_b().ok())
                    .map(|b| b.as_ref().to_vec())
                    .ok_or_else(|| StoreError::Backend(format!("key item without {name}")))
            };
            let key_id = <[u8; 32]>::try_from(bytes("key_id")?)
                .map_err(|_| StoreError::Backend("key_id is not 32 bytes".to_owned()))?;
            let counter = u32::try_from(number(&item, "counter")?)
                .map_err(|_| StoreError::Backend("counter out of range".to_owned()))?;
            Ok(Some(AttestedKey {
                key_id,
                public_key: bytes("public_key")?,
                counter,
            }))
        })
    }

    fn put_key<'a>(&'a self, device: &'a DeviceId, key: &'a AttestedKey) -> StoreFuture<'a, ()> {
        let mut item = id(key_id(device));
        item.insert(
            "key_id".to_owned(),
            AttributeValue::B(Blob::new(key.key_id.to_vec())),
        );
        item.insert(
            "public_key".to_owned(),
            AttributeValue::B(Blob::new(key.public_key.clone())),
        );
        item.insert(
            "counter".to_owned(),
            AttributeValue::N(key.counter.to_string()),
        );
        Box::pin(self.put(item))
    }

    fn advance_counter<'a>(
        &'a self,
        device: &'a DeviceId,
        key_id: &'a [u8; 32],
        counter: u32,
    ) -> StoreFuture<'a, bool> {
        Box::pin(self.advance(device, key_id, counter))
    }

    fn bind_fingerprint<'a>(
        &'a self,
        device: &'a DeviceId,
        serial: &'a Serial,
        fingerprint: &'a Fingerprint,
    ) -> StoreFuture<'a, Fingerprint> {
        Box::pin(self.bind(device, serial, fingerprint))
    }

    fn count_attempt<'a>(
        &'a self,
        device: &'a DeviceId,
        window: u64,
        expires_at: u64,
    ) -> StoreFuture<'a, u64> {
        Box::pin(self.count(device, window, expires_at))
    }

    fn put_verdict<'a>(
        &'a self,
        device: &'a DeviceId,
        verdict: &'a Verdict,
    ) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let json =
                serde_json::to_string(verdict).map_err(|e| StoreError::Backend(e.to_string()))?;
            let mut item = id(verdict_id(device, verdict.platform));
            item.insert("verdict".to_owned(), s(json));
            self.put(item).await
        })
    }

    fn verdict<'a>(
        &'a self,
        device: &'a DeviceId,
        platform: Platform,
    ) -> StoreFuture<'a, Option<Verdict>> {
        Box::pin(async move {
            let Some(item) = self.get(verdict_id(device, platform)).await? else {
                return Ok(None);
            };
            serde_json::from_str(text(&item, "verdict")?)
                .map(Some)
                .map_err(|e| StoreError::Backend(format!("verdict: {e}")))
        })
    }

    fn clear<'a>(&'a self, at: DateTime<Utc>) -> StoreFuture<'a, ()> {
        let mut item = id(CLEARED.to_owned());
        item.insert("at".to_owned(), s(at.to_rfc3339()));
        Box::pin(self.put(item))
    }

    fn cleared_at(&self) -> StoreFuture<'_, Option<DateTime<Utc>>> {
        Box::pin(async move {
            let Some(item) = self.get(CLEARED.to_owned()).await? else {
                return Ok(None);
            };
            DateTime::parse_from_rfc3339(text(&item, "at")?)
                .map(|t| Some(t.with_timezone(&Utc)))
                .map_err(|e| StoreError::Backend(format!("cleared at: {e}")))
        })
    }
}
