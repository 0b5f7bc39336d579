//! Row-level security proven in SQL, as the restricted role, independent of gateway code.

use sqlx::{PgPool, Row};
use uuid::Uuid;

use crate::harness::TestDb;

/// Migrated database with two orgs, each with a user, a business and a team membership.
async fn seeded() -> (TestDb, PgPool, Uuid, Uuid) {
    let db = TestDb::new().await;
    let pool = db.owner_pool().await;
    gateway::db::migrate(&pool).await.unwrap();
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    for (org, name) in [(a, "A"), (b, "B")] {
        sqlx::query("INSERT INTO orgs (id, name, plan) VALUES ($1, $2, 'standard')")
            .bind(org)
            .bind(name)
            .execute(&pool)
            .await
            .unwrap();
        let user = Uuid::new_v4();
        let biz = Uuid::new_v4();
        sqlx::query("INSERT INTO users (id, tenant_id, email, role) VALUES ($1, $2, $3, 'admin')")
            .bind(user)
            .bind(org)
            .bind(format!("u@{name}.test").to_lowercase())
            .execute(&pool)
            .await
            .unwrap();
        sqlx::query("INSERT INTO businesses (id, tenant_id, name, owner_id) VALUES ($1, $2, 'biz', $3)")
            .bind(biz)
            .bind(org)
            .bind(user)
            .execute(&pool)
            .await
            .unwrap();
        sqlx::query("INSERT INTO business_members (tenant_id, business_id, user_id) VALUES ($1, $2, $3)")
            .bind(org)
            .bind(biz)
            .bind(user)
            .execute(&pool)
            .await
            .unwrap();
        let contact = Uuid::new_v4();
        sqlx::raw_sql(&format!(
            "INSERT INTO crm_contacts (id, tenant_id) VALUES ('{contact}', '{org}');
             INSERT INTO contact_identities (tenant_id, type, value, contact_id) VALUES ('{org}', 'email', 'c@{name}.test', '{contact}');
             INSERT INTO crm_events (tenant_id, contact_id, type) VALUES ('{org}', '{contact}', 'signup');
             INSERT INTO crm_outbox (tenant_id, topic, payload) VALUES ('{org}', 'event.tracked.v1', '{{}}');"
        ).to_lowercase())
        .execute(&pool)
        .await
        .unwrap();
        let (endpoint, event, job) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        sqlx::raw_sql(&format!(
            "INSERT INTO webhook_endpoints (id, tenant_id, provider, scheme) VALUES ('{endpoint}', '{org}', 'generic', 'standard-webhooks');
             INSERT INTO webhook_secrets (tenant_id, endpoint_id, sealed) VALUES ('{org}', '{endpoint}', '\\x00');
             INSERT INTO webhook_events (id, tenant_id, endpoint_id, provider, event_key, body) VALUES ('{event}', '{org}', '{endpoint}', 'generic', 'k', '\\x7b7d');
             INSERT INTO webhook_event_keys (tenant_id, endpoint_id, event_key, event_id) VALUES ('{org}', '{endpoint}', 'k', '{event}');
             INSERT INTO jobs (id, tenant_id, kind, ref_id, max_attempts) VALUES ('{job}', '{org}', 'webhook', '{event}', 3);
             INSERT INTO agent_runs (tenant_id, job_id, kind, attempt, status, started_at) VALUES ('{org}', '{job}', 'webhook', 1, 'succeeded', now());"
        ))
        .execute(&pool)
        .await
        .unwrap();
        let (campaign, lead) = (Uuid::new_v4(), Uuid::new_v4());
        sqlx::raw_sql(&format!(
            "INSERT INTO provider_configs (tenant_id, provider, base_url) VALUES ('{org}', 'smartlead', 'https://x.test');
             INSERT INTO provider_secrets (tenant_id, provider, name, sealed) VALUES ('{org}', 'smartlead', 'api_key', '\\x00');
             INSERT INTO org_capabilities (tenant_id, capability, provider) VALUES ('{org}', 'email_outreach', 'smartlead');
             INSERT INTO provisioning (tenant_id, capability, provider, status) VALUES ('{org}', 'email_outreach', 'smartlead', 'pending');
             INSERT INTO inboxes (tenant_id, provider, provider_id) VALUES ('{org}', 'smartlead', '1');
             INSERT INTO campaigns (id, tenant_id, name, channel, provider) VALUES ('{campaign}', '{org}', 'c', 'email', 'smartlead');
             INSERT INTO campaign_sequences (tenant_id, campaign_id, version, steps) VALUES ('{org}', '{campaign}', 1, '[]');
             INSERT INTO campaign_leads (id, tenant_id, campaign_id, identity, email) VALUES ('{lead}', '{org}', '{campaign}', 'l@x.test', 'l@x.test');
             INSERT INTO campaign_messages (tenant_id, campaign_id, lead_id, direction, event_key) VALUES ('{org}', '{campaign}', '{lead}', 'inbound', 'k');
             INSERT INTO campaign_activity (tenant_id, campaign_id, lead_id, kind, event_key) VALUES ('{org}', '{campaign}', '{lead}', 'reply.received', 'k');"
        ))
        .execute(&pool)
        .await
        .unwrap();
        // The optimizer's tables; the change's insert writes its one audit row.
        sqlx::raw_sql(&format!(
            "INSERT INTO tenant_settings (tenant_id) VALUES ('{org}');
             INSERT INTO campaign_step_stats (tenant_id, campaign_id, seq_number) VALUES ('{org}', '{campaign}', 1);
             INSERT INTO campaign_optimizations (tenant_id, campaign_id, optimization_type, summary, rationale, changes, source, agent, base_version, dedupe_key)
                 VALUES ('{org}', '{campaign}', 'update_subject', 's', 'r', '[]', 'rules', 'optimizer', 1, 'k');
             INSERT INTO schedules (tenant_id, kind, cron, timezone) VALUES ('{org}', 'optimizer', '0 9 * * 1', 'UTC');
             INSERT INTO schedule_runs (tenant_id, kind, slot, outcome) VALUES ('{org}', 'optimizer', now(), 'skipped');"
        ))
        .execute(&pool)
        .await
        .unwrap();
    }
    (db, pool, a, b)
}

/// Tenant tables the restricted role has no privilege on at all: only the owner role reads
/// them (in a transaction that sets the org), so the host can use a secret no plugin can read.
const CLOSED: &[&str] = &["provider_configs", "provider_secrets"];

/// Every table with a tenant_id column the restricted role may use: partitions are not among
/// them (it reaches their rows through the parent; history.rs proves they are closed to it).
async fn open_tenant_tables(pool: &PgPool) -> Vec<String> {
    let partitions: Vec<String> =
        sqlx::query_scalar("SELECT relname::text FROM pg_class WHERE relispartition").fetch_all(pool).await.unwrap();
    tenant_tables(pool).await.into_iter().filter(|t| !CLOSED.contains(&t.as_str()) && !partitions.contains(t)).collect()
}

/// Every table with a tenant_id column.
async fn tenant_tables(pool: &PgPool) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT c.relname::text FROM pg_class c \
         JOIN pg_namespace n ON n.oid = c.relnamespace AND n.nspname = 'public' \
         JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'tenant_id' AND NOT a.attisdropped \
         WHERE c.relkind IN ('r', 'p') ORDER BY 1",
    )
    .fetch_all(pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn every_tenant_table_forces_rls_with_using_and_with_check() {
    let (_db, pool, _, _) = seeded().await;
    let tables = tenant_tables(&pool).await;
    assert!(tables.len() >= 3, "{tables:?}");
    for t in &tables {
        let row = sqlx::query("SELECT relrowsecurity, relforcerowsecurity FROM pg_class WHERE oid = $1::regclass")
            .bind(t)
            .fetch_one(&pool)
            .await
            .unwrap();
        assert!(row.get::<bool, _>(0) && row.get::<bool, _>(1), "{t}: RLS not enabled and forced");
        // (name, roles, USING, WITH CHECK)
        type PolicyRow = (String, Vec<String>, Option<String>, Option<String>);
        let policies: Vec<PolicyRow> =
            sqlx::query_as("SELECT policyname::text, roles::text[], qual, with_check FROM pg_policies WHERE tablename = $1")
                .bind(t)
                .fetch_all(&pool)
                .await
                .unwrap();
        assert!(policies.iter().any(|p| p.0 == "tenant_isolation"), "{t}: no tenant policy");
        for (name, roles, qual, check) in policies {
            if name == "platform_access" {
                // Cross-tenant work (endpoint resolution, job claims) is for the owner role alone,
                // and only in a transaction that asks for it.
                assert!(!roles.iter().any(|r| r == "public" || r == "gateway_app"), "{t}: platform policy for {roles:?}");
                assert!(qual.as_deref().is_some_and(|q| q.contains("app.scope")), "{t}: platform USING");
                continue;
            }
            assert!(qual.as_deref().is_some_and(|q| q.contains("app_current_tenant")), "{t}: USING");
            assert!(check.as_deref().is_some_and(|q| q.contains("app_current_tenant")), "{t}: WITH CHECK");
        }
    }
    // The restricted role: no superuser, no BYPASSRLS, owns nothing.
    let (sup, bypass): (bool, bool) =
        sqlx::query_as("SELECT rolsuper, rolbypassrls FROM pg_roles WHERE rolname = 'gateway_app'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert!(!sup && !bypass);
    let owned: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_class WHERE relowner = 'gateway_app'::regrole")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(owned, 0);
}

#[tokio::test]
async fn without_a_tenant_setting_the_restricted_role_sees_nothing() {
    let (_db, pool, _, _) = seeded().await;
    for t in open_tenant_tables(&pool).await {
        for setting in [None, Some("")] {
            let mut tx = pool.begin().await.unwrap();
            sqlx::query("SET LOCAL ROLE gateway_app").execute(&mut *tx).await.unwrap();
            // Asking for the platform scope does nothing for the restricted role.
            sqlx::query("SELECT set_config('app.scope', 'platform', true)").execute(&mut *tx).await.unwrap();
            if let Some(s) = setting {
                sqlx::query("SELECT set_config('app.tenant_id', $1, true)").bind(s).execute(&mut *tx).await.unwrap();
            }
            let n: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM {t}")).fetch_one(&mut *tx).await.unwrap();
            assert_eq!(n, 0, "{t} visible with tenant setting {setting:?}");
            tx.rollback().await.unwrap();
        }
    }
}

#[tokio::test]
async fn with_tenant_a_set_b_is_invisible_and_cannot_be_written() {
    let (_db, pool, a, b) = seeded().await;
    for t in open_tenant_tables(&pool).await {
        let mut tx = gateway::db::begin_tenant(&pool, a, gateway::role::Role::Admin.into()).await.unwrap();
        let (mine, theirs): (i64, i64) = sqlx::query_as(&format!(
            "SELECT count(*) FILTER (WHERE tenant_id = $1), count(*) FILTER (WHERE tenant_id = $2) FROM {t}"
        ))
        .bind(a)
        .bind(b)
        .fetch_one(tx.raw_connection())
        .await
        .unwrap();
        assert_eq!((mine, theirs), (1, 0), "{t}");
        // Moving one of A's rows into B is refused by WITH CHECK.
        let e = sqlx::query(&format!("UPDATE {t} SET tenant_id = $1"))
            .bind(b)
            .execute(tx.raw_connection())
            .await
            .unwrap_err();
        // A change's identity never changes: its trigger refuses the move before RLS does.
        let refused = if t == "campaign_optimizations" { "23514" } else { "42501" };
        assert_eq!(sqlstate(&e), refused, "{t}: {e}");
        tx.rollback().await.unwrap();
    }
    // Inserting a row that carries B's tenant_id while acting as A.
    let mut tx = gateway::db::begin_tenant(&pool, a, gateway::role::Role::Admin.into()).await.unwrap();
    let e = sqlx::query("INSERT INTO users (id, tenant_id, email, role) VALUES ($1, $2, 'x@y.test', 'member')")
        .bind(Uuid::new_v4())
        .bind(b)
        .execute(tx.raw_connection())
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e), "42501", "{e}");
    tx.rollback().await.unwrap();
    // Deleting B's rows as A deletes nothing.
    let mut tx = gateway::db::begin_tenant(&pool, a, gateway::role::Role::Admin.into()).await.unwrap();
    let n = sqlx::query("DELETE FROM business_members WHERE tenant_id = $1").bind(b).execute(tx.raw_connection()).await.unwrap();
    assert_eq!(n.rows_affected(), 0);
    tx.commit().await.unwrap();
}

#[tokio::test]
async fn platform_tables_are_closed_to_the_restricted_role() {
    let (_db, pool, a, _) = seeded().await;
    for t in ["orgs", "api_tokens", "job_workers", "provider_configs", "provider_secrets"] {
        let mut tx = gateway::db::begin_tenant(&pool, a, gateway::role::Role::Admin.into()).await.unwrap();
        let e = sqlx::query(&format!("SELECT count(*) FROM {t}")).execute(tx.raw_connection()).await.unwrap_err();
        assert_eq!(sqlstate(&e), "42501", "{t}: {e}");
    }
}

#[tokio::test]
async fn tenant_settings_do_not_outlive_the_transaction_on_a_pooled_connection() {
    let (db, _, a, _) = seeded().await;
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(&db.url())
        .await
        .unwrap();
    let mut tx = gateway::db::begin_tenant(&pool, a, gateway::role::Role::Member.into()).await.unwrap();
    let (user, tenant, role): (String, String, String) = sqlx::query_as(
        "SELECT current_user::text, current_setting('app.tenant_id'), current_setting('app.role')",
    )
    .fetch_one(tx.raw_connection())
    .await
    .unwrap();
    assert_eq!((user.as_str(), tenant, role.as_str()), ("gateway_app", a.to_string(), "member"));
    tx.commit().await.unwrap();
    // Same (only) connection, next use: back to the owner, no tenant.
    let (user, tenant): (String, Option<String>) =
        sqlx::query_as("SELECT current_user::text, NULLIF(current_setting('app.tenant_id', true), '')")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(user, "postgres");
    assert_eq!(tenant, None);
}

fn sqlstate(e: &sqlx::Error) -> String {
    match e {
        sqlx::Error::Database(d) => d.code().map(|c| c.to_string()).unwrap_or_default(),
        other => format!("{other}"),
    }
}

#[tokio::test]
async fn database_errors_are_logged_without_the_values_postgres_quotes() {
    let (_db, pool, a, _) = seeded().await;
    // A duplicate email: PostgreSQL's message quotes the key, i.e. the email.
    let e = sqlx::query("INSERT INTO users (id, tenant_id, email, role) VALUES ($1, $2, 'u@a.test', 'member')")
        .bind(Uuid::new_v4())
        .bind(a)
        .execute(&pool)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("u@a.test") || format!("{e:?}").contains("u@a.test"), "the premise: {e:?}");
    let logged = gateway::error::loggable(&gateway::Error::Db(e));
    assert!(logged.contains("SQLSTATE 23505") && logged.contains("users"), "{logged}");
    assert!(!logged.contains("u@a.test"), "{logged}");
}
