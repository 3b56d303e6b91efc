//! Leases: items taken with a conditional write when they are free, held by their holder, or
//! expired; renewed by the holder; released when done.
//!
//! - The operator's leader lease (`LEASE#operator`): only the holder reconciles. Every write
//!   gives the record a new `version`; a standby claims it only on condition that the version it
//!   watched go unchanged for a full lease is still there (the decision is the controller's,
//!   `controller::leader::judge`), so no replica compares its clock with another's.
//! - Named locks (`LOCK#<name>`): serialize read–modify–write sequences on resources that have
//!   no conditional write of their own (an S3 bucket policy), across reconciles and replicas.
//!   Their expiry is wall-clock time (`expires < now`): a lock is held for seconds, and a
//!   replica whose clock is off by more than its 30 s only makes two writers race, which the
//!   read-back after every policy write catches.

use super::{Store, StoreError, n, s};
use crate::store::runs::now_ms;

const LEASE_PK: &str = "LEASE#operator";
const LEASE_SK: &str = "LEASE";
const LOCK_SK: &str = "LOCK";

/// The leader lease as read from the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseRecord {
    pub holder: String,
    /// Changes on every write of the record.
    pub version: String,
    /// When the holder meant it to expire, on its clock (for people; nobody decides on it).
    pub expires_ms: u64,
}

/// The item of a named lock.
fn lock_pk(name: &str) -> String {
    format!("LOCK#{name}")
}

impl Store {
    /// Takes or renews the lock item `pk`/`sk` for `holder` for `ttl_ms`. `false`: another
    /// holds it.
    async fn take(
        &self,
        pk: &str,
        sk: &str,
        holder: &str,
        ttl_ms: u64,
    ) -> Result<bool, StoreError> {
        let now = now_ms();
        let res = self
            .client()
            .put_item()
            .table_name(self.table())
            .item("pk", s(pk))
            .item("sk", s(sk))
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

    /// Deletes the item `pk`/`sk` if `holder` has it.
    async fn give_up(&self, pk: &str, sk: &str, holder: &str) -> Result<(), StoreError> {
        let res = self
            .client()
            .delete_item()
            .table_name(self.table())
            .key("pk", s(pk))
            .key("sk", s(sk))
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

    /// Writes the leader lease for `holder` with a new version, if nobody holds it, `holder`
    /// does, or it is still at version `seen` (the one a standby watched go unrenewed).
    /// `false`: someone else holds it.
    pub async fn claim_leader_lease(
        &self,
        holder: &str,
        ttl_ms: u64,
        seen: Option<&str>,
    ) -> Result<bool, StoreError> {
        let mut condition = "attribute_not_exists(pk) OR holder = :me".to_string();
        let mut req = self
            .client()
            .put_item()
            .table_name(self.table())
            .item("pk", s(LEASE_PK))
            .item("sk", s(LEASE_SK))
            .item("holder", s(holder))
            .item("version", s(&format!("{:016x}", rand::random::<u64>())))
            .item("expires", n(now_ms() + ttl_ms))
            .expression_attribute_values(":me", s(holder));
        if let Some(v) = seen {
            condition.push_str(" OR version = :seen");
            req = req.expression_attribute_values(":seen", s(v));
        }
        match req.condition_expression(condition).send().await {
            Ok(_) => Ok(true),
            Err(e) if super::condition_failed(&e) => Ok(false),
            Err(e) => Err(self.aws_err("PutItem", e)),
        }
    }

    /// Gives the lease up if `holder` has it, so another replica takes over at once.
    pub async fn release_leader_lease(&self, holder: &str) -> Result<(), StoreError> {
        self.give_up(LEASE_PK, LEASE_SK, holder).await
    }

    /// The lease record, if any.
    pub async fn leader_lease(&self) -> Result<Option<LeaseRecord>, StoreError> {
        let out = self
            .client()
            .get_item()
            .table_name(self.table())
            .key("pk", s(LEASE_PK))
            .key("sk", s(LEASE_SK))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| self.aws_err("GetItem", e))?;
        Ok(out.item().map(|i| LeaseRecord {
            holder: super::get_s(i, "holder").unwrap_or_default().to_string(),
            version: super::get_s(i, "version").unwrap_or_default().to_string(),
            expires_ms: super::get_n(i, "expires").unwrap_or(0),
        }))
    }

    /// Takes the lock `name` for `holder` for `ttl_ms` if it is free or expired. `false`:
    /// someone else holds it.
    pub async fn try_lock(
        &self,
        name: &str,
        holder: &str,
        ttl_ms: u64,
    ) -> Result<bool, StoreError> {
        self.take(&lock_pk(name), LOCK_SK, holder, ttl_ms).await
    }

    /// Releases the lock `name` if `holder` still has it.
    pub async fn unlock(&self, name: &str, holder: &str) -> Result<(), StoreError> {
        self.give_up(&lock_pk(name), LOCK_SK, holder).await
    }
}
