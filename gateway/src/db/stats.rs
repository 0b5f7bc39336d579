//! `campaign_step_stats`: per-step counts recounted from `campaign_activity`. The chain's
//! `stats` step and every optimizer run call [`refresh`]; the optimizer plugin reads the
//! table through `tenant-db` (a plugin has no aggregate queries).

use uuid::Uuid;

use super::TenantTx;
use crate::error::Result;

/// Recounts one campaign's steps (idempotent: a recount, not an increment, so a retried or
/// duplicated step changes nothing). Steps whose activity is gone drop to zero.
pub async fn refresh(tx: &mut TenantTx, campaign: Uuid) -> Result<u64> {
    let done = sqlx::query(
        "WITH counts AS ( \
             SELECT COALESCE(seq_number, 0) AS seq_number, \
                    count(*) FILTER (WHERE kind = 'message.sent')::int AS sent, \
                    count(*) FILTER (WHERE kind = 'message.opened')::int AS opened, \
                    count(*) FILTER (WHERE kind = 'link.clicked')::int AS clicked, \
                    count(*) FILTER (WHERE kind = 'reply.received')::int AS replied, \
                    count(*) FILTER (WHERE kind = 'bounced')::int AS bounced, \
                    count(*) FILTER (WHERE kind = 'unsubscribed')::int AS unsubscribed \
             FROM campaign_activity WHERE tenant_id = $1 AND campaign_id = $2 \
             GROUP BY COALESCE(seq_number, 0)), \
         gone AS ( \
             UPDATE campaign_step_stats s SET sent = 0, opened = 0, clicked = 0, replied = 0, bounced = 0, \
                    unsubscribed = 0, updated_at = now() \
             WHERE s.tenant_id = $1 AND s.campaign_id = $2 \
               AND NOT EXISTS (SELECT 1 FROM counts c WHERE c.seq_number = s.seq_number)) \
         INSERT INTO campaign_step_stats (tenant_id, campaign_id, seq_number, sent, opened, clicked, replied, bounced, unsubscribed) \
         SELECT $1, $2, seq_number, sent, opened, clicked, replied, bounced, unsubscribed FROM counts \
         ON CONFLICT (tenant_id, campaign_id, seq_number) DO UPDATE SET sent = EXCLUDED.sent, \
             opened = EXCLUDED.opened, clicked = EXCLUDED.clicked, replied = EXCLUDED.replied, \
             bounced = EXCLUDED.bounced, unsubscribed = EXCLUDED.unsubscribed, updated_at = now()",
    )
    .bind(tx.org())
    .bind(campaign)
    .execute(tx.conn())
    .await?;
    Ok(done.rows_affected())
}
