//! The operator's leader lease: one item, taken with a conditional write when it is free, held
//! by its holder, or expired; renewed by the holder; released on shutdown. Only the holder
//! reconciles. Expiry is wall-clock time, so replicas' clocks must agree to well within the
//! lease length (NTP keeps them within milliseconds).

use super::{Store, StoreError, n, s};
use crate::store::runs::now_ms;

const LEASE_PK: &str = "LEASE#operator";

/// Who holds the lease now, as read from the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseHolder {
    pub holder: String,
    pub expires_ms: u64,
}

impl Store {
    /// Takes or renews the lease for `holder` for `ttl_ms`. `false`: another replica holds it.
    pub async fn acquire_leader_lease(
        &self,
        holder: &str,
        ttl_ms: u64,
    ) -> Result<bool, StoreError> {
        let now = now_ms();
        let res = self
            .client()
            .put_item()
            .table_name(self.table())
            .item("pk", s(LEASE_PK))
            .item("sk", s("LEASE"))
            .item("holder", s(holder))
            .item("expires", n(now + ttl_ms))
            .condition_expression("attribute_not_exists(pk) OR holder = :me OR expires < :now")
            .expression_attribute_values(":me", s(holder))
            .expression_attribute_values(":now", n(now))
            .send()
            .await;
        match res {
            Ok(_) => Ok(true),
            Err(e) if super::condition_failed(&e) => Ok(false),
            Err(e) => Err(self.aws_err("PutItem", e)),
        }
    }

    /// Gives the lease up if `holder` has it, so another replica takes over at once.
    pub async fn release_leader_lease(&self, holder: &str) -> Result<(), StoreError> {
        let res = self
            .client()
            .delete_item()
            .table_name(self.table())
            .key("pk", s(LEASE_PK))
            .key("sk", s("LEASE"))
            .condition_expression("holder = :me")
            .expression_attribute_values(":me", s(holder))
            .send()
            .await;
        match res {
            Ok(_) => Ok(()),
            Err(e) if super::condition_failed(&e) => Ok(()),
            Err(e) => Err(self.aws_err("DeleteItem", e)),
        }
    }

    /// The current holder, if any.
    pub async fn lease_holder(&self) -> Result<Option<LeaseHolder>, StoreError> {
        let out = self
            .client()
            .get_item()
            .table_name(self.table())
            .key("pk", s(LEASE_PK))
            .key("sk", s("LEASE"))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| self.aws_err("GetItem", e))?;
        Ok(out.item().map(|i| LeaseHolder {
            holder: super::get_s(i, "holder").unwrap_or_default().to_string(),
            expires_ms: super::get_n(i, "expires").unwrap_or(0),
        }))
    }
}
