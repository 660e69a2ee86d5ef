//! Claims in DynamoDB: one item per used token, partition key `id` =
//! `<purpose>#<hex of the digest>`, attribute `expires_at` (Unix seconds: the token's expiry
//! plus [`super::RETENTION_MARGIN_SECS`]) for the table's time-to-live, which deletes it.
//!
//! A claim is one `PutItem` with `attribute_not_exists(id)`: DynamoDB applies the condition
//! and the write as one step, so of two sandboxes claiming one token exactly one succeeds and
//! the other gets `ConditionalCheckFailedException`. A record that time-to-live has not deleted
//! yet (it may lag) still counts as used; its token has expired by then anyway. The function's
//! role may only `PutItem` on this table (`template.yaml`). With `AUTO_CREATE_RESOURCES=true`
//! (development) the table is created on first use, on demand, without the time-to-live.

use std::collections::HashMap;
use std::fmt::Write as _;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::AttributeValue;

use super::{ClaimFuture, Purpose, RETENTION_MARGIN_SECS, SingleUse, SingleUseError};
use crate::aws::{AutoCreate, id_keyed_table};
use crate::telemetry::aws::{aws_error_text, traced};

#[derive(Debug)]
pub struct DynamoSingleUse {
    client: Client,
    table: String,
    auto_create: AutoCreate,
}

fn backend(e: &(dyn std::error::Error + 'static)) -> SingleUseError {
    SingleUseError::Backend(aws_error_text(e))
}

/// The item key of a claim.
pub fn item_id(purpose: Purpose, digest: &[u8; 32]) -> String {
    let mut id = String::with_capacity(purpose.as_str().len() + 1 + 64);
    id.push_str(purpose.as_str());
    id.push('#');
    for byte in digest {
        let _ = write!(id, "{byte:02x}");
    }
    id
}

impl DynamoSingleUse {
    pub fn new(client: Client, table: String, auto_create: bool) -> Self {
        Self {
            client,
            table,
            auto_create: AutoCreate::new(auto_create),
        }
    }

    async fn put(
        &self,
        purpose: Purpose,
        digest: &[u8; 32],
        expires_at: u64,
    ) -> Result<bool, SingleUseError> {
        self.auto_create
            .ensure(&self.client, &self.table, "single-use", || {
                id_keyed_table(&self.client, &self.table)
            })
            .await
            .map_err(SingleUseError::Backend)?;
        let item = HashMap::from([
            ("id".to_owned(), AttributeValue::S(item_id(purpose, digest))),
            (
                "expires_at".to_owned(),
                AttributeValue::N(expires_at.saturating_add(RETENTION_MARGIN_SECS).to_string()),
            ),
        ]);
        let request = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(id)");
        match traced("DynamoDB", "PutItem", request.send()).await {
            Ok(_) => Ok(true),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|e| e.is_conditional_check_failed_exception()) =>
            {
                Ok(false)
            }
            Err(e) => Err(backend(&e)),
        }
    }
}

impl SingleUse for DynamoSingleUse {
    fn claim<'a>(
        &'a self,
        purpose: Purpose,
        digest: &'a [u8; 32],
        expires_at: u64,
    ) -> ClaimFuture<'a> {
        Box::pin(self.put(purpose, digest, expires_at))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_item_id_names_the_purpose_and_the_digest() {
        let id = item_id(Purpose::OAuthState, &[0xab; 32]);
        assert_eq!(id, format!("oauth-state#{}", "ab".repeat(32)));
    }
}
