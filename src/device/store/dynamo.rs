//! Certificate records in DynamoDB (spec §4.4 schema): partition key `device_id`, sort key
//! `serial_number`, attributes `platform`, `issued_at`, `expires_at` (RFC 3339 UTC),
//! `certificate_pem`, `revoked`, `revoked_at`, `revocation_reason`; global secondary indexes
//! `SerialIndex` (`serial_number`) and `ExpirationIndex` (`device_id`, `expires_at`).
//! Serial lookups use the index, never a scan. With `AUTO_CREATE_RESOURCES=true` the table
//! (on demand) is created on first use if it is missing.

use std::collections::HashMap;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, GlobalSecondaryIndex, KeySchemaElement,
    KeyType, Projection, ProjectionType, ScalarAttributeType,
};
use chrono::{DateTime, Utc};
use tokio::sync::OnceCell;

use super::{CertificateRecord, CertificateStore, StoreError, StoreFuture, newest};
use crate::device::id::{DeviceId, Platform, Serial};
use crate::telemetry::aws::{aws_error_text, traced};

const SERIAL_INDEX: &str = "SerialIndex";
const EXPIRATION_INDEX: &str = "ExpirationIndex";

#[derive(Debug)]
pub struct DynamoStore {
    client: Client,
    table: String,
    auto_create: bool,
    ready: OnceCell<()>,
}

fn backend(e: &(dyn std::error::Error + 'static)) -> StoreError {
    StoreError::Backend(aws_error_text(e))
}

fn s(value: &str) -> AttributeValue {
    AttributeValue::S(value.to_owned())
}

fn to_item(record: &CertificateRecord) -> HashMap<String, AttributeValue> {
    let mut item = HashMap::from([
        ("device_id".to_owned(), s(record.device_id.as_str())),
        ("serial_number".to_owned(), s(record.serial.as_str())),
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
        serial: Serial::parse(&text("serial_number")?).map_err(StoreError::Backend)?,
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

impl DynamoStore {
    pub fn new(client: Client, table: String, auto_create: bool) -> Self {
        Self {
            client,
            table,
            auto_create,
            ready: OnceCell::new(),
        }
    }

    async fn ready(&self) -> Result<(), StoreError> {
        if !self.auto_create {
            return Ok(());
        }
        self.ready
            .get_or_try_init(|| async {
                let described = traced(
                    "DynamoDB",
                    "DescribeTable",
                    self.client.describe_table().table_name(&self.table).send(),
                )
                .await;
                match described {
                    Ok(_) => Ok(()),
                    Err(e)
                        if e.as_service_error()
                            .is_some_and(|e| e.is_resource_not_found_exception()) =>
                    {
                        self.create_table().await
                    }
                    Err(e) => Err(backend(&e)),
                }
            })
            .await
            .map(|_| ())
    }

    async fn create_table(&self) -> Result<(), StoreError> {
        let key = |name: &str, kind: KeyType| {
            KeySchemaElement::builder()
                .attribute_name(name)
                .key_type(kind)
                .build()
        };
        let attribute = |name: &str| {
            AttributeDefinition::builder()
                .attribute_name(name)
                .attribute_type(ScalarAttributeType::S)
                .build()
        };
        let all = Projection::builder()
            .projection_type(ProjectionType::All)
            .build();
        let request = self
            .client
            .create_table()
            .table_name(&self.table)
            .billing_mode(BillingMode::PayPerRequest)
            .key_schema(key("device_id", KeyType::Hash).map_err(|e| backend(&e))?)
            .key_schema(key("serial_number", KeyType::Range).map_err(|e| backend(&e))?)
            .attribute_definitions(attribute("device_id").map_err(|e| backend(&e))?)
            .attribute_definitions(attribute("serial_number").map_err(|e| backend(&e))?)
            .attribute_definitions(attribute("expires_at").map_err(|e| backend(&e))?)
            .global_secondary_indexes(
                GlobalSecondaryIndex::builder()
                    .index_name(SERIAL_INDEX)
                    .key_schema(key("serial_number", KeyType::Hash).map_err(|e| backend(&e))?)
                    .projection(all.clone())
                    .build()
                    .map_err(|e| backend(&e))?,
            )
            .global_secondary_indexes(
                GlobalSecondaryIndex::builder()
                    .index_name(EXPIRATION_INDEX)
                    .key_schema(key("device_id", KeyType::Hash).map_err(|e| backend(&e))?)
                    .key_schema(key("expires_at", KeyType::Range).map_err(|e| backend(&e))?)
                    .projection(all)
                    .build()
                    .map_err(|e| backend(&e))?,
            );
        traced("DynamoDB", "CreateTable", request.send())
            .await
            .map_err(|e| backend(&e))?;
        tracing::info!(table = %self.table, "created the certificate table (AUTO_CREATE_RESOURCES)");
        Ok(())
    }

    async fn device_records(
        &self,
        device: &DeviceId,
    ) -> Result<Vec<CertificateRecord>, StoreError> {
        self.ready().await?;
        let mut records = Vec::new();
        let mut start = None;
        loop {
            let request = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression("device_id = :d")
                .expression_attribute_values(":d", s(device.as_str()))
                .set_exclusive_start_key(start);
            let page = traced("DynamoDB", "Query", request.send())
                .await
                .map_err(|e| backend(&e))?;
            for item in page.items() {
                records.push(from_item(item)?);
            }
            start = page.last_evaluated_key().cloned();
            if start.is_none() {
                return Ok(records);
            }
        }
    }
}

impl CertificateStore for DynamoStore {
    fn save<'a>(&'a self, record: &'a CertificateRecord) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            self.ready().await?;
            let request = self
                .client
                .put_item()
                .table_name(&self.table)
                .set_item(Some(to_item(record)));
            traced("DynamoDB", "PutItem", request.send())
                .await
                .map_err(|e| backend(&e))?;
            Ok(())
        })
    }

    fn current<'a>(&'a self, device: &'a DeviceId) -> StoreFuture<'a, Option<CertificateRecord>> {
        Box::pin(async move { Ok(newest(self.device_records(device).await?)) })
    }

    fn by_serial<'a>(&'a self, serial: &'a Serial) -> StoreFuture<'a, Option<CertificateRecord>> {
        Box::pin(async move {
            self.ready().await?;
            let request = self
                .client
                .query()
                .table_name(&self.table)
                .index_name(SERIAL_INDEX)
                .key_condition_expression("serial_number = :s")
                .expression_attribute_values(":s", s(serial.as_str()))
                .limit(1);
            let page = traced("DynamoDB", "Query", request.send())
                .await
                .map_err(|e| backend(&e))?;
            page.items().first().map(from_item).transpose()
        })
    }

    fn revoke_serial<'a>(&'a self, serial: &'a Serial, reason: &'a str) -> StoreFuture<'a, bool> {
        Box::pin(async move {
            let Some(mut record) = self.by_serial(serial).await? else {
                return Ok(false);
            };
            if !record.revoke(reason, Utc::now()) {
                return Ok(false);
            }
            self.save(&record).await?;
            Ok(true)
        })
    }

    fn revoke_device<'a>(&'a self, device: &'a DeviceId, reason: &'a str) -> StoreFuture<'a, bool> {
        Box::pin(async move {
            let mut any = false;
            for mut record in self.device_records(device).await? {
                if record.revoke(reason, Utc::now()) {
                    self.save(&record).await?;
                    any = true;
                }
            }
            Ok(any)
        })
    }
}
