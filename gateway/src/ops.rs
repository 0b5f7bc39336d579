//! Administrative operations shared by the HTTP admin routes and the CLI, so both behave the
//! same: validation, error codes, audit logging and cache invalidation live here once.

use serde_json::json;
use sqlx::PgPool;
use uuid::Uuid;

use crate::auth;
use crate::db;
use crate::error::{violated_constraint, ApiError, Code};
use crate::policy::PolicySet;
use crate::role::Role;

pub struct CreatedToken {
    pub token: String,
    pub token_id: Uuid,
    pub user_id: Uuid,
}

/// Validates an org name: trimmed, 1..=200 characters.
fn org_name(name: &str) -> Result<&str, ApiError> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 200 {
        return Err(ApiError::invalid("name", "must be 1 to 200 characters"));
    }
    Ok(name)
}

fn known_plan<'a>(policies: &'a PolicySet, plan: Option<&'a str>) -> Result<&'a str, ApiError> {
    let plan = plan.unwrap_or(&policies.default_plan);
    if policies.plan(plan).is_none() {
        let mut known: Vec<_> = policies.plans.keys().cloned().collect();
        known.sort();
        return Err(ApiError::new(Code::ValidationFailed, "request failed validation").with_details(
            json!([{ "field": "plan", "problem": format!("unknown plan; known: {}", known.join(", ")) }]),
        ));
    }
    Ok(plan)
}

pub async fn create_org(pool: &PgPool, policies: &PolicySet, name: &str, plan: Option<&str>) -> Result<Uuid, ApiError> {
    let name = org_name(name)?;
    let plan = known_plan(policies, plan)?;
    let id = db::orgs::create(pool, name, plan).await?;
    tracing::info!(org_id = %id, plan, "org_created");
    Ok(id)
}

pub async fn set_plan(pool: &PgPool, policies: &PolicySet, org: Uuid, plan: &str) -> Result<(), ApiError> {
    let plan = known_plan(policies, Some(plan))?;
    let mut tx = pool.begin().await?;
    if !db::orgs::set_plan(&mut *tx, org, plan).await? {
        return Err(ApiError::not_found());
    }
    db::notify_invalidate(&mut *tx).await?;
    tx.commit().await?;
    tracing::info!(org_id = %org, plan, "org_plan_changed");
    Ok(())
}

/// Normalises an email (trim, lowercase) and checks its shape. The address itself is never
/// logged.
pub fn normalise_email(email: &str) -> Result<String, ApiError> {
    let e = email.trim().to_lowercase();
    let ok = e.len() <= 254
        && e.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty()
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
                && !e.contains(char::is_whitespace)
                && e.matches('@').count() == 1
        });
    if !ok {
        return Err(ApiError::invalid("email", "must be an email address"));
    }
    Ok(e)
}

/// Creates (or re-roles) the user with this email in `org` and issues a token for them.
pub async fn create_token(pool: &PgPool, org: Uuid, role: &str, email: &str) -> Result<CreatedToken, ApiError> {
    let role = match Role::parse(role) {
        Some(r @ (Role::Member | Role::Admin)) => r,
        _ => return Err(ApiError::invalid("role", "must be member or admin")),
    };
    let email = normalise_email(email)?;
    let token = auth::generate_token();
    let mut tx = pool.begin().await?;
    if db::orgs::plan_of(&mut *tx, org).await?.is_none() {
        return Err(ApiError::not_found());
    }
    // The user row is tenant data: write it under RLS, then step back out for the platform
    // token row, all in one transaction.
    let mut tenant = db::enter_tenant(tx, org, Role::SuperAdmin.into(), None).await?;
    let user_id = db::users::upsert(&mut tenant, &email, role).await?;
    let mut tx = tenant.leave().await?;
    let token_id = db::tokens::insert(&mut *tx, &auth::digest(&token), role, Some(org), Some(user_id)).await?;
    // A changed role must not be served from a stale cache entry of an older token.
    db::notify_invalidate(&mut *tx).await?;
    tx.commit().await?;
    tracing::info!(org_id = %org, user_id = %user_id, token_id = %token_id, role = role.as_str(), "token_created");
    Ok(CreatedToken { token, token_id, user_id })
}

pub async fn revoke_token(pool: &PgPool, token_id: Uuid) -> Result<(), ApiError> {
    let mut tx = pool.begin().await?;
    if !db::tokens::revoke(&mut *tx, token_id).await? {
        return Err(ApiError::not_found());
    }
    db::notify_invalidate(&mut *tx).await?;
    tx.commit().await?;
    tracing::info!(token_id = %token_id, "token_revoked");
    Ok(())
}

/// Ensures a super-admin token exists. Returns the token when this call created a random one
/// (the caller shows it once); `None` when one existed or the configured value was used.
pub async fn bootstrap(pool: &PgPool, configured: Option<&str>) -> Result<Option<String>, ApiError> {
    let mut tx = pool.begin().await?;
    db::tokens::lock_bootstrap(&mut *tx).await?;
    if db::tokens::any_active_super_admin(&mut *tx).await? {
        return Ok(None);
    }
    let (token, generated) = match configured {
        Some(t) if t.len() >= 16 => (t.to_string(), false),
        Some(_) => {
            return Err(ApiError::new(Code::ValidationFailed, "GATEWAY_BOOTSTRAP_TOKEN must be at least 16 characters"))
        }
        None => (auth::generate_token(), true),
    };
    let id = db::tokens::insert(&mut *tx, &auth::digest(&token), Role::SuperAdmin, None, None)
        .await
        .map_err(|e| match &e {
            crate::error::Error::Db(db) if violated_constraint(db) == Some("api_tokens_hash_key") => {
                ApiError::new(Code::Conflict, "GATEWAY_BOOTSTRAP_TOKEN matches an existing (revoked) token")
            }
            _ => ApiError::from(e),
        })?;
    tx.commit().await?;
    tracing::info!(token_id = %id, "bootstrap_super_admin_token_created");
    Ok(generated.then_some(token))
}

/// What `gateway secrets reseal` did.
#[derive(Debug, Default, serde::Serialize)]
pub struct ResealReport {
    /// The key every value is now sealed with.
    pub newest_key_id: String,
    pub orgs: u64,
    /// Values opened and sealed again under the newest key.
    pub resealed: u64,
    /// Values already under the newest key (opened, to prove the ring still opens them).
    pub current: u64,
    /// Values changed by someone else between read and rewrite (left as written; run again).
    pub changed_meanwhile: u64,
    /// Values that do not open with this ring: `"org <id>: <which>: <why>"` (no secret).
    pub unreadable: Vec<String>,
}

/// Re-seals every sealed secret (webhook secrets, provider credentials, notify secrets) under
/// the ring's newest key, one org at a time, `batch` rewrites per transaction. Idempotent, and
/// safe while replicas serve as long as they all hold the newest key (each rewrite is a
/// compare-and-swap on the old bytes). Every value is opened, so a clean report also proves
/// the ring opens everything.
pub async fn reseal(
    pool: &PgPool,
    ring: &crate::webhooks::seal::SecretKey,
    batch: usize,
) -> Result<ResealReport, ApiError> {
    use db::secrets::SealedRef;
    let mut report = ResealReport { newest_key_id: ring.newest().to_string(), ..Default::default() };
    for (org, _, _) in db::orgs::list(pool).await? {
        report.orgs += 1;
        let mut pending = Vec::new();
        for (what, sealed) in db::secrets::sealed_of_org(pool, org).await? {
            let aad = match &what {
                SealedRef::Webhook { endpoint, .. } => endpoint.as_bytes().to_vec(),
                SealedRef::Provider { provider, name } => crate::webhooks::seal::provider_aad(org, provider, name),
                SealedRef::Notify => crate::chain::notify_aad(org),
            };
            match ring.try_open_bound(&aad, &sealed) {
                Err(e) => report.unreadable.push(format!("org {org}: {what}: {e}")),
                Ok(_) if ring.is_current(&sealed) => report.current += 1,
                Ok(plain) => {
                    let plain = zeroize::Zeroizing::new(plain);
                    let new = ring.seal_bound(&aad, &plain);
                    pending.push((what, sealed, new));
                }
            }
        }
        for chunk in pending.chunks(batch.max(1)) {
            let n = db::secrets::replace_sealed(pool, org, chunk).await?;
            report.resealed += n;
            report.changed_meanwhile += chunk.len() as u64 - n;
        }
    }
    Ok(report)
}
