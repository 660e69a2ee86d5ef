//! Certificate records in DynamoDB: partition key `device_id`, sort key `serial_number`.
//!
//! Per device, the item with sort key [`CURRENT`] is its current record (the certificate it may
//! use, attribute `serial` naming it), and one item per serial is the history. Every attribute
//! of both: `platform`, `issued_at`, `expires_at` (RFC 3339 UTC), `certificate_pem`, `revoked`,
//! `revoked_at`, `revocation_reason`; history items also carry `purge_at` (epoch seconds,
//! [`HISTORY_RETENTION_DAYS`] after expiry) for the table's time-to-live, which deletes them.
//!
//! Requests touch known keys only, never a query over a device's history: the guard and status
//! are one strongly consistent `GetItem` of the current item; an install is one
//! `TransactWriteItems` (the current item under a condition on what the caller read, the new
//! history item, the replaced one marked revoked), a revocation one `GetItem` and one
//! `TransactWriteItems` conditioned on the serial it read (retried when a renewal got in
//! between). Index `ExpirationIndex` (`device_id`, `expires_at`) stays from the spec's schema;
//! nothing on a request path reads an index (they are eventually consistent). With
//! `AUTO_CREATE_RESOURCES=true` (development) the table is created on first use if it is
//! missing, on demand and without the time-to-live, which `template.yaml` turns on.

use std::collections::HashMap;
use std::time::Duration;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::create_table::builders::CreateTableFluentBuilder;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, GlobalSecondaryIndex, KeySchemaElement,
    KeyType, Projection, ProjectionType, Put, ScalarAttributeType, TransactWriteItem, Update,
};
use chrono::{DateTime, Utc};

use super::{CertificateRecord, CertificateStore, Expect, SUPERSEDED, StoreError, StoreFuture};
use crate::aws::AutoCreate;
use crate::device::id::{DeviceId, Platform, Serial};
use crate::telemetry::aws::{aws_error_text, traced};

/// Sort key of a device's current record (never a serial: serials are hex digits).
pub const CURRENT: &str = "#current";

/// History records are deleted (by the table's time-to-live) this long after they expire.
pub const HISTORY_RETENTION_DAYS: i64 = 90;

const EXPIRATION_INDEX: &str = "ExpirationIndex";

/// Attempts of a compare-and-set that DynamoDB cancels for a concurrent transaction, or (for a
/// revocation) that a renewal overtook.
const ATTEMPTS: u32 = 5;

#[derive(Debug)]
pub struct DynamoStore {
    client: Client,
    table: String,
    auto_create: AutoCreate,
}

fn backend(e: &(dyn std::error::Error + 'static)) -> StoreError {
    StoreError::Backend(aws_error_text(e))
}

fn s(value: &str) -> AttributeValue {
    AttributeValue::S(value.to_owned())
}

fn key(device: &DeviceId, sort: &str) -> HashMap<String, AttributeValue> {
    HashMap::from([
        ("device_id".to_owned(), s(device.as_str())),
        ("serial_number".to_owned(), s(sort)),
    ])
}

/// The record's attributes under `sort` (its serial for history, [`CURRENT`] for the current
/// item, which names the serial in `serial`).
fn to_item(record: &CertificateRecord, sort: &str) -> HashMap<String, AttributeValue> {
    let mut item = key(&record.device_id, sort);
    item.extend([
        ("serial".to_owned(), s(record.serial.as_str())),
        ("platform".to_owned(), s(record.platform.as_str())),
        ("issued_at".to_owned(), s(&record.issued_at.to_rfc3339())),
        ("expires_at".to_owned(), s(&record.expires_at.to_rfc3339())),
        ("certificate_pem".to_owned(), s(&record.certificate_pem)),
        ("revoked".to_owned(), AttributeValue::Bool(record.revoked)),
    ]);
    if let Some(at) = record.revoked_at {
        item.insert("revoked_at".to_owned(), s(&at.to_rfc3339()));
    }
    if let Some(reason) = &record.revocation_reason {
        item.insert("revocation_reason".to_owned(), s(reason));
    }
    if sort != CURRENT {
        let purge_at = record.expires_at + chrono::Duration::days(HISTORY_RETENTION_DAYS);
        item.insert(
            "purge_at".to_owned(),
            AttributeValue::N(purge_at.timestamp().to_string()),
        );
    }
    item
}

fn from_item(item: &HashMap<String, AttributeValue>) -> Result<CertificateRecord, StoreError> {
    let text = |key: &str| {
        item.get(key)
            .and_then(|v| v.as_s().ok())
            .cloned()
            .ok_or_else(|| StoreError::Backend(format!("item without {key}")))
    };
    let time = |key: &str| -> Result<DateTime<Utc>, StoreError> {
        DateTime::parse_from_rfc3339(&text(key)?)
            .map(|t| t.with_timezone(&Utc))
            .map_err(|e| StoreError::Backend(format!("{key}: {e}")))
    };
    Ok(CertificateRecord {
        device_id: DeviceId::parse(&text("device_id")?).map_err(StoreError::Backend)?,
        serial: Serial::parse(&text("serial")?).map_err(StoreError::Backend)?,
        platform: Platform::parse(&text("platform")?).map_err(StoreError::Backend)?,
        issued_at: time("issued_at")?,
        expires_at: time("expires_at")?,
        certificate_pem: text("certificate_pem")?,
        revoked: item
            .get("revoked")
            .and_then(|v| v.as_bool().ok())
            .copied()
            .unwrap_or(false),
        revoked_at: time("revoked_at").ok(),
        revocation_reason: text("revocation_reason").ok(),
    })
}

/// An update of `sort`'s item marking it revoked now, keeping an earlier revocation's time and
/// reason.
fn revocation(
    table: &str,
    device: &DeviceId,
    sort: &str,
    reason: &str,
    condition: Option<&Serial>,
) -> Result<TransactWriteItem, StoreError> {
    let mut update = Update::builder()
        .table_name(table)
        .set_key(Some(key(device, sort)))
        .update_expression(
            "SET revoked = :t, revoked_at = if_not_exists(revoked_at, :at), revocation_reason = if_not_exists(revocation_reason, :why)",
        )
        .expression_attribute_values(":t", AttributeValue::Bool(true))
        .expression_attribute_values(":at", s(&Utc::now().to_rfc3339()))
        .expression_attribute_values(":why", s(&reason.chars().take(256).collect::<String>()));
    if let Some(serial) = condition {
        update = update
            .condition_expression("serial = :s AND revoked = :f")
            .expression_attribute_values(":s", s(serial.as_str()))
            .expression_attribute_values(":f", AttributeValue::Bool(false));
    }
    let update = update.build().map_err(|e| backend(&e))?;
    Ok(TransactWriteItem::builder().update(update).build())
}

/// How a transaction ended, from the point of view of its first item (the current record).
enum Committed {
    Yes,
    /// The first item's condition failed: the current record is not what the caller read.
    Stale,
    /// DynamoDB cancelled it for a concurrent transaction on the same items: try again.
    Contended,
}

impl DynamoStore {
    pub fn new(client: Client, table: String, auto_create: bool) -> Self {
        Self {
            client,
            table,
            auto_create: AutoCreate::new(auto_create),
        }
    }

    async fn ready(&self) -> Result<(), StoreError> {
        self.auto_create
            .ensure(&self.client, &self.table, "certificate", || {
                self.create_request()
            })
            .await
            .map_err(StoreError::Backend)
    }

    fn create_request(&self) -> Result<CreateTableFluentBuilder, String> {
        let text = |e: aws_sdk_dynamodb::error::BuildError| aws_error_text(&e);
        let key = |name: &str, kind: KeyType| {
            KeySchemaElement::builder()
                .attribute_name(name)
                .key_type(kind)
                .build()
                .map_err(text)
        };
        let attribute = |name: &str| {
            AttributeDefinition::builder()
                .attribute_name(name)
                .attribute_type(ScalarAttributeType::S)
                .build()
                .map_err(text)
        };
        let all = Projection::builder()
            .projection_type(ProjectionType::All)
            .build();
        Ok(self
            .client
            .create_table()
            .table_name(&self.table)
            .billing_mode(BillingMode::PayPerRequest)
            .key_schema(key("device_id", KeyType::Hash)?)
            .key_schema(key("serial_number", KeyType::Range)?)
            .attribute_definitions(attribute("device_id")?)
            .attribute_definitions(attribute("serial_number")?)
            .attribute_definitions(attribute("expires_at")?)
            .global_secondary_indexes(
                GlobalSecondaryIndex::builder()
                    .index_name(EXPIRATION_INDEX)
                    .key_schema(key("device_id", KeyType::Hash)?)
                    .key_schema(key("expires_at", KeyType::Range)?)
                    .projection(all)
                    .build()
                    .map_err(text)?,
            ))
    }

    async fn read_current(
        &self,
        device: &DeviceId,
    ) -> Result<Option<CertificateRecord>, StoreError> {
        self.ready().await?;
        let request = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(key(device, CURRENT)))
            .consistent_read(true);
        let answer = traced("DynamoDB", "GetItem", request.send())
            .await
            .map_err(|e| backend(&e))?;
        answer.item().map(from_item).transpose()
    }

    async fn transact(&self, items: Vec<TransactWriteItem>) -> Result<Committed, StoreError> {
        let request = self
            .client
            .transact_write_items()
            .set_transact_items(Some(items));
        match traced("DynamoDB", "TransactWriteItems", request.send()).await {
            Ok(_) => Ok(Committed::Yes),
            Err(SdkError::ServiceError(e)) => match e.err() {
                TransactWriteItemsError::TransactionCanceledException(cancelled) => {
                    let codes: Vec<&str> = cancelled
                        .cancellation_reasons()
                        .iter()
                        .map(|r| r.code().unwrap_or("None"))
                        .collect();
                    match codes.first().copied() {
                        Some("ConditionalCheckFailed") => Ok(Committed::Stale),
                        _ if codes.contains(&"TransactionConflict") => Ok(Committed::Contended),
                        _ => Err(StoreError::Backend(format!(
                            "transaction cancelled: {}",
                            codes.join(", ")
                        ))),
                    }
                }
                other => Err(backend(other)),
            },
            Err(e) => Err(backend(&e)),
        }
    }

    async fn install_once(
        &self,
        record: &CertificateRecord,
        expect: Expect<'_>,
    ) -> Result<Committed, StoreError> {
        let mut current = Put::builder()
            .table_name(&self.table)
            .set_item(Some(to_item(record, CURRENT)));
        let replaced = match expect {
            Expect::Nothing => {
                current = current.condition_expression("attribute_not_exists(device_id)");
                None
            }
            Expect::Current(serial) => {
                current = current
                    .condition_expression("serial = :s")
                    .expression_attribute_values(":s", s(serial.as_str()));
                Some(serial)
            }
            Expect::Active(serial) => {
                current = current
                    .condition_expression("serial = :s AND revoked = :f")
                    .expression_attribute_values(":s", s(serial.as_str()))
                    .expression_attribute_values(":f", AttributeValue::Bool(false));
                Some(serial)
            }
        };
        let history = Put::builder()
            .table_name(&self.table)
            .set_item(Some(to_item(record, record.serial.as_str())))
            .condition_expression("attribute_not_exists(serial_number)");
        let mut items = vec![
            TransactWriteItem::builder()
                .put(current.build().map_err(|e| backend(&e))?)
                .build(),
            TransactWriteItem::builder()
                .put(history.build().map_err(|e| backend(&e))?)
                .build(),
        ];
        if let Some(old) = replaced {
            items.push(revocation(
                &self.table,
                &record.device_id,
                old.as_str(),
                SUPERSEDED,
                None,
            )?);
        }
        self.ready().await?;
        self.transact(items).await
    }
}

/// The pause before another attempt of a contended transaction.
async fn back_off(round: u32) {
    tokio::time::sleep(Duration::from_millis(20 * u64::from(round))).await;
}

impl CertificateStore for DynamoStore {
    fn current<'a>(&'a self, device: &'a DeviceId) -> StoreFuture<'a, Option<CertificateRecord>> {
        Box::pin(self.read_current(device))
    }

    fn install<'a>(
        &'a self,
        record: &'a CertificateRecord,
        expect: Expect<'a>,
    ) -> StoreFuture<'a, bool> {
        Box::pin(async move {
            for round in 1..=ATTEMPTS {
                match self.install_once(record, expect).await? {
                    Committed::Yes => return Ok(true),
                    Committed::Stale => return Ok(false),
                    Committed::Contended => back_off(round).await,
                }
            }
            Err(contended())
        })
    }

    fn revoke_current<'a>(
        &'a self,
        device: &'a DeviceId,
        reason: &'a str,
    ) -> StoreFuture<'a, bool> {
        Box::pin(async move {
            for round in 1..=ATTEMPTS {
                let Some(current) = self.read_current(device).await? else {
                    return Ok(false);
                };
                if current.revoked {
                    return Ok(false);
                }
                let items = vec![
                    revocation(&self.table, device, CURRENT, reason, Some(&current.serial))?,
                    revocation(&self.table, device, current.serial.as_str(), reason, None)?,
                ];
                match self.transact(items).await? {
                    Committed::Yes => return Ok(true),
                    // A renewal installed another certificate (or another revocation won)
                    // after the read: read again and revoke what is current now.
                    Committed::Stale => {}
                    Committed::Contended => back_off(round).await,
                }
            }
            Err(contended())
        })
    }
}

fn contended() -> StoreError {
    StoreError::Backend("the certificate record stayed contended".to_owned())
}
