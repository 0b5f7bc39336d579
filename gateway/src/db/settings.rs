//! `tenant_settings` (migration 0007): one row per org, absent until an admin writes one
//! (then the defaults apply).

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::TenantTx;
use crate::error::Result;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SettingsRow {
    pub require_manual_approval: bool,
    pub notify_url: Option<String>,
    /// Sealed (`chain::notify_aad`).
    pub notify_secret: Option<Vec<u8>>,
    pub llm_model: Option<String>,
    pub updated_at: DateTime<Utc>,
}

/// The org's settings row, if it has one; `lock` holds it (and, with no row, nothing: two
/// first writes meet at the primary key in [`put`]).
pub async fn get(tx: &mut TenantTx, lock: bool) -> Result<Option<SettingsRow>> {
    let sql = if lock {
        "SELECT require_manual_approval, notify_url, notify_secret, llm_model, updated_at \
         FROM tenant_settings WHERE tenant_id = $1 FOR UPDATE"
    } else {
        "SELECT require_manual_approval, notify_url, notify_secret, llm_model, updated_at \
         FROM tenant_settings WHERE tenant_id = $1"
    };
    Ok(sqlx::query_as(sql).bind(tx.org()).fetch_optional(tx.conn()).await?)
}

/// Writes the whole row (insert or replace).
pub async fn put(
    tx: &mut TenantTx,
    require_manual_approval: bool,
    notify_url: Option<&str>,
    notify_secret: Option<&[u8]>,
    llm_model: Option<&str>,
    updated_by: Option<Uuid>,
) -> Result<SettingsRow> {
    Ok(sqlx::query_as(
        "INSERT INTO tenant_settings (tenant_id, require_manual_approval, notify_url, notify_secret, llm_model, updated_by) \
         VALUES ($1, $2, $3, $4, $5, $6) \
         ON CONFLICT (tenant_id) DO UPDATE SET require_manual_approval = EXCLUDED.require_manual_approval, \
             notify_url = EXCLUDED.notify_url, notify_secret = EXCLUDED.notify_secret, llm_model = EXCLUDED.llm_model, \
             updated_by = EXCLUDED.updated_by, updated_at = now() \
         RETURNING require_manual_approval, notify_url, notify_secret, llm_model, updated_at",
    )
    .bind(tx.org())
    .bind(require_manual_approval)
    .bind(notify_url)
    .bind(notify_secret)
    .bind(llm_model)
    .bind(updated_by)
    .fetch_one(tx.conn())
    .await?)
}
