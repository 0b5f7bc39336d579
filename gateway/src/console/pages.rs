//! The console's pages, rendered with maud (every interpolated value is HTML-escaped).
//! Plain links and forms only: no script, so the Content-Security-Policy allows none.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use maud::{html, Markup, DOCTYPE};
use serde_json::Value;
use uuid::Uuid;

use super::Session;
use crate::db;
use crate::error::ApiError;
use crate::phases::Call;
use crate::role::Role;

fn layout(title: &str, session: Option<&Session>, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · gateway console" }
                link rel="stylesheet" href="/console/style.css";
            }
            body {
                header {
                    a.brand href="/console/orgs" { "gateway console" }
                    @if let Some(s) = session {
                        nav aria-label="Console" {
                            a href="/console/orgs" { "Orgs" }
                            a href="/console/plugins" { "Plugins" }
                            a href="/console/jobs" { "Job queue" }
                            a href="/console/approvals" { "Approval queue" }
                            form method="post" action="/console/sign-out" {
                                input type="hidden" name="csrf" value=(s.csrf);
                                button type="submit" { "Sign out" }
                            }
                        }
                    }
                }
                main { h1 { (title) } (body) }
            }
        }
    }
}

pub fn message(title: &str, text: &str) -> Markup {
    layout(title, None, html! { p.error role="alert" { (text) } p { a href="/console/orgs" { "Back to the console" } } })
}

pub fn sign_in(csrf: &str, error: Option<&str>) -> Markup {
    layout("Sign in", None, html! {
        @if let Some(e) = error { p.error role="alert" { (e) } }
        form.stack method="post" action="/console/sign-in" {
            input type="hidden" name="csrf" value=(csrf);
            label for="token" { "Super-admin token" }
            input #token type="password" name="token" autocomplete="off" required autofocus;
            button type="submit" { "Sign in" }
        }
        p.hint { "The token is exchanged for a session; it is not kept in your browser." }
    })
}

/// The GET pages, by route id.
pub async fn get(call: &Call<'_>, id: &str, session: &Session) -> Result<Markup, ApiError> {
    match id {
        "console.home" | "console.orgs" => orgs(call, session).await,
        "console.org" => org(call, session).await,
        "console.plugins" => plugins(call, session).await,
        "console.plugin_confirm" => confirm(call, session).await,
        "console.jobs" => jobs(call, session).await,
        "console.approvals" => approvals(call, session).await,
        "console.approval_confirm" => approval_confirm(call, session).await,
        _ => Err(ApiError::not_found()),
    }
}

async fn orgs(call: &Call<'_>, session: &Session) -> Result<Markup, ApiError> {
    let rows = db::orgs::list(&call.state.pool).await?;
    let hourly = &call.state.console.hourly;
    Ok(layout("Orgs", Some(session), html! {
        p.hint { "Counts are this replica's, over the last hour." }
        div.scroll {
            table {
                thead { tr { th { "Org" } th { "Plan" } th { "Requests (1 h)" } th { "Errors (1 h)" } th { "Rate-limited (1 h)" } th { "Plugin failures (1 h)" } } }
                tbody {
                    @for (id, name, plan) in &rows {
                        @let c = hourly.last_hour(*id);
                        tr data-org=(id) {
                            td { a href={ "/console/orgs/" (id) } { (name) } }
                            td { (plan) }
                            td.num.requests { (c.requests) }
                            td.num.errors { (c.errors) }
                            td.num.limited { (c.rate_limited) }
                            td.num.failures { (c.plugin_failures) }
                        }
                    }
                }
            }
        }
        @if rows.is_empty() { p { "No orgs yet." } }
    }))
}

async fn org(call: &Call<'_>, session: &Session) -> Result<Markup, ApiError> {
    let id = super::uuid(call, "org_id")?;
    let state = call.state;
    let (_, name, plan) = db::orgs::list(&state.pool).await?.into_iter().find(|(o, _, _)| *o == id).ok_or_else(ApiError::not_found)?;
    let tokens = db::tokens::list_for_org(&state.pool, id).await?;
    let mut tx = db::begin_tenant(&state.pool, id, Role::SuperAdmin.into()).await?;
    let events = db::webhooks::list_events(&mut tx, None, 50).await?;
    let pending = db::optimizations::pending_count(&mut tx).await?;
    tx.commit().await?;
    let dead = events.iter().filter(|e| e.status.as_deref() == Some("dead")).count();
    let c = state.console.hourly.last_hour(id);
    let replayed = call.query_param("replayed").and_then(|v| Uuid::parse_str(v).ok());
    Ok(layout(&name, Some(session), html! {
        @if let Some(e) = replayed { p.notice role="status" { "Event " code { (e) } " is back in the queue." } }
        dl {
            dt { "Plan" } dd { (plan) }
            dt { "Requests (1 h)" } dd.requests { (c.requests) }
            dt { "Errors, 4xx and 5xx (1 h)" } dd.errors { (c.errors) }
            dt { "Rate-limited requests (1 h)" } dd.limited { (c.rate_limited) }
            dt { "Plugin failures (1 h)" } dd.failures { (c.plugin_failures) }
            dt { "Dead letters (of the last 50 events)" } dd.dead { (dead) }
            dt { "Changes awaiting approval" } dd.pending { a href={ "/console/approvals?org=" (id) } { (pending) } }
        }
        h2 { "Tokens" }
        div.scroll {
            table {
                thead { tr { th { "Token" } th { "Role" } th { "Created" } th { "State" } } }
                tbody {
                    @for t in &tokens {
                        tr {
                            td { code { (t.id) } }
                            td { (t.role) }
                            td { (t.created_at.format("%Y-%m-%d %H:%M UTC")) }
                            td {
                                @if let Some(r) = t.revoked_at { "revoked " (r.format("%Y-%m-%d %H:%M")) }
                                @else {
                                    form.inline method="post" action={ "/console/tokens/" (t.id) "/revoke" } {
                                        input type="hidden" name="csrf" value=(session.csrf);
                                        input type="hidden" name="org" value=(id);
                                        button type="submit" aria-label={ "Revoke token " (t.id) } { "Revoke" }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        @if tokens.is_empty() { p { "No tokens." } }
        h2 { "Webhook events" }
        div.scroll {
            table {
                thead { tr { th { "Event" } th { "Provider" } th { "Type" } th { "Received" } th { "Status" } th { "Last error" } th {} } }
                tbody {
                    @for e in &events {
                        tr class=(e.status.as_deref().unwrap_or("")) {
                            td { code { (e.id) } }
                            td { (e.provider) }
                            td { (e.event_type.as_deref().unwrap_or("")) }
                            td { (e.received_at.format("%Y-%m-%d %H:%M:%S")) }
                            td { (e.status.as_deref().unwrap_or("")) " (" (e.attempts.unwrap_or(0)) "/" (e.max_attempts.unwrap_or(0)) ")" }
                            td { (e.last_error.as_deref().unwrap_or("")) }
                            td {
                                @if e.status.as_deref() == Some("dead") {
                                    form.inline method="post" action={ "/console/orgs/" (id) "/events/" (e.id) "/replay" } {
                                        input type="hidden" name="csrf" value=(session.csrf);
                                        button type="submit" aria-label={ "Replay event " (e.id) } { "Replay" }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        @if events.is_empty() { p { "No webhook events." } }
    }))
}

async fn plugins(call: &Call<'_>, session: &Session) -> Result<Markup, ApiError> {
    let state = call.state;
    let rows = db::plugins::list(&state.pool).await?;
    let mut by_name: BTreeMap<&str, Vec<&db::plugins::VersionRow>> = BTreeMap::new();
    for r in &rows {
        by_name.entry(r.name.as_str()).or_default().push(r);
    }
    let mut previous = BTreeMap::new();
    for name in by_name.keys() {
        if let Some((_, Some(p))) = db::plugins::active(&state.pool, name).await? {
            previous.insert(*name, p);
        }
    }
    let done = call.query_param("done").and_then(|d| {
        let mut it = d.splitn(3, ':');
        Some((it.next()?.to_string(), it.next()?.parse::<i32>().ok()?, it.next()?.parse::<i32>().ok()?))
    });
    Ok(layout("Plugins", Some(session), html! {
        @if let Some((name, from, to)) = &done {
            p.notice role="status" { (name) ": version " (to) " is active (was " (from) ")." }
        }
        p.hint { "Uploads go through the API (PUT /v1/admin/plugins/{name}); activating and rolling back are here." }
        @for (name, versions) in &by_name {
            section.plugin data-plugin=(name) {
                h2 { (name) }
                @if let Some(p) = previous.get(name) {
                    p { a.button href={ "/console/plugins/" (name) "/confirm?action=rollback" } { "Roll back to version " (p) "…" } }
                }
                div.scroll {
                    table {
                        thead { tr { th { "Version" } th { "SHA-256" } th { "Uploaded" } th { "State" } } }
                        tbody {
                            @for v in versions {
                                tr {
                                    td.num { (v.version) }
                                    td { code { (v.sha256.get(..16).unwrap_or(&v.sha256)) "…" } }
                                    td { (v.uploaded_at.format("%Y-%m-%d %H:%M UTC")) }
                                    td {
                                        @if v.active { strong.active { "active" } }
                                        @else { a href={ "/console/plugins/" (name) "/confirm?action=activate&version=" (v.version) } { "Activate…" } }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        @if by_name.is_empty() { p { "No plugins in the registry." } }
    }))
}

/// The confirmation step before activating or rolling back.
async fn confirm(call: &Call<'_>, session: &Session) -> Result<Markup, ApiError> {
    let name = super::plugin_name(call)?;
    let state = call.state;
    let (current, previous) = db::plugins::active(&state.pool, name).await?.ok_or_else(ApiError::not_found)?;
    let (action, target, what) = match call.query_param("action") {
        Some("rollback") => {
            let to = previous.ok_or_else(|| ApiError::new(crate::error::Code::Conflict, "no previously active version to roll back to"))?;
            ("rollback", to, "Roll back")
        }
        Some("activate") => {
            let v = call.query_param("version").and_then(|v| v.parse::<i32>().ok()).filter(|v| *v > 0).ok_or_else(|| ApiError::invalid("version", "must be a positive integer"))?;
            ("activate", v, "Activate")
        }
        _ => return Err(ApiError::invalid("action", "must be rollback or activate")),
    };
    Ok(layout(&format!("{what} {name}?"), Some(session), html! {
        p { "Every replica switches " strong { (name) } " from version " (current) " to version " (target) " for new requests." }
        form.stack method="post" action={ "/console/plugins/" (name) "/" (action) } {
            input type="hidden" name="csrf" value=(session.csrf);
            input type="hidden" name="version" value=(target);
            button type="submit" { (what) " to version " (target) }
        }
        p { a href="/console/plugins" { "Cancel" } }
    }))
}

async fn jobs(call: &Call<'_>, session: &Session) -> Result<Markup, ApiError> {
    let state = call.state;
    let depth = db::jobs::depth(&state.pool).await?;
    let oldest = db::jobs::oldest_pending_secs(&state.pool).await?;
    let names: BTreeMap<Uuid, String> = db::orgs::list(&state.pool).await?.into_iter().map(|(id, n, _)| (id, n)).collect();
    let mut totals: BTreeMap<&str, i64> = BTreeMap::new();
    let mut per_org: BTreeMap<Uuid, [i64; 3]> = BTreeMap::new();
    for (org, status, n) in &depth {
        *totals.entry(status.as_str()).or_default() += n;
        let i = match status.as_str() { "pending" => 0, "processing" => 1, _ => 2 };
        per_org.entry(*org).or_default()[i] += n;
    }
    Ok(layout("Job queue", Some(session), html! {
        dl {
            @for s in ["pending", "processing", "dead"] {
                dt { (s) } dd.num { (totals.get(s).copied().unwrap_or(0)) }
            }
            dt { "Oldest pending job" }
            dd { @match oldest { Some(s) => { (format!("{:.0}", s)) " s old" }, None => "none" } }
        }
        h2 { "Backlog per org" }
        div.scroll {
            table {
                thead { tr { th { "Org" } th { "Pending" } th { "Processing" } th { "Dead" } } }
                tbody {
                    @for (org, [p, r, d]) in &per_org {
                        tr {
                            td { a href={ "/console/orgs/" (org) } { (names.get(org).map(String::as_str).unwrap_or("?")) } }
                            td.num { (p) } td.num { (r) } td.num { (d) }
                        }
                    }
                }
            }
        }
        @if per_org.is_empty() { p { "The queue is empty." } }
    }))
}

/// Changes the approval queue shows at most, across orgs: the page stays bounded.
const MAX_PENDING_SHOWN: i64 = 200;
/// Characters of a value or rationale shown inline; the rest is behind a disclosure.
const INLINE_CHARS: usize = 120;
/// The statuses the queue counts per org over the last day.
const COUNTED: [&str; 4] = ["proposed", "applied", "failed", "rolled_back"];

/// Text that may be long: its start inline, the whole in a `<details>`.
fn long_text(text: &str) -> Markup {
    if text.chars().count() <= INLINE_CHARS {
        return html! { (text) };
    }
    let start: String = text.chars().take(INLINE_CHARS).collect();
    html! {
        (start) "…"
        details { summary { "Full text" } pre { (text) } }
    }
}

/// A change's value as text: strings as they are, other JSON as JSON.
fn value_text(v: Option<&Value>) -> String {
    match v {
        Some(Value::String(s)) => s.clone(),
        None | Some(Value::Null) => "(none)".into(),
        Some(other) => other.to_string(),
    }
}

/// "5 min", "3 h", "2 d".
fn span(secs: i64) -> String {
    let secs = secs.max(0);
    match secs {
        0..=59 => "<1 min".into(),
        60..=3599 => format!("{} min", secs / 60),
        3600..=172_799 => format!("{} h", secs / 3600),
        _ => format!("{} d", secs / 86_400),
    }
}

/// The before → after of a change's first (only) item.
fn before_after(changes: &Value) -> Markup {
    let c = changes.get(0);
    let field = c.and_then(|c| c.get("field")).and_then(Value::as_str).unwrap_or("?");
    let asset = match (c.and_then(|c| c.get("asset_type")).and_then(Value::as_str), c.and_then(|c| c.get("asset_id")).and_then(Value::as_str)) {
        (Some("sequence_step"), Some(step)) => format!("step {step}, {field}"),
        _ => field.to_string(),
    };
    html! {
        div.asset { (asset) }
        div.before { span.label { "Before: " } (long_text(&value_text(c.and_then(|c| c.get("previous_value"))))) }
        div.after { span.label { "→ After: " } (long_text(&value_text(c.and_then(|c| c.get("new_value"))))) }
    }
}

/// `<org>:<change>` from a notice's query parameter.
fn org_change(v: &str) -> Option<(Uuid, Uuid)> {
    let (o, c) = v.split_once(':')?;
    Some((Uuid::parse_str(o).ok()?, Uuid::parse_str(c).ok()?))
}

/// The notice after a review: what the change is now, read back from its org.
async fn review_notice(call: &Call<'_>) -> Result<Option<Markup>, ApiError> {
    let (refused, value) = match (call.query_param("done"), call.query_param("refused")) {
        (Some(v), _) => (false, v),
        (None, Some(v)) => (true, v),
        _ => return Ok(None),
    };
    let Some((org, id)) = org_change(value) else { return Ok(None) };
    let mut tx = db::begin_tenant(&call.state.pool, org, Role::SuperAdmin.into()).await?;
    let change = db::optimizations::get(&mut tx, id, false).await?;
    tx.commit().await?;
    let Some(c) = change else { return Ok(None) };
    Ok(Some(html! {
        p.notice.review role="status" data-status=(c.status) {
            @if refused { "Not done: " }
            "“" (c.summary) "” is " strong { (c.status) } "."
            @if let Some(e) = &c.error { " " (e) }
        }
    }))
}

async fn approvals(call: &Call<'_>, session: &Session) -> Result<Markup, ApiError> {
    let state = call.state;
    let only = match call.query_param("org") {
        None | Some("") => None,
        Some(o) => Some(Uuid::parse_str(o).map_err(|_| ApiError::invalid("org", "must be a UUID"))?),
    };
    let notice = review_notice(call).await?;
    let orgs = db::orgs::list(&state.pool).await?;
    let mut sections = Vec::new();
    let mut counts: Vec<(Uuid, String, BTreeMap<String, i64>)> = Vec::new();
    let mut left = MAX_PENDING_SHOWN;
    let mut capped = false;
    for (org, name, _) in orgs.iter().filter(|(o, _, _)| only.is_none_or(|x| x == *o)) {
        let mut tx = db::begin_tenant(&state.pool, *org, Role::SuperAdmin.into()).await?;
        // One more than fits tells whether the cap hides some.
        let mut rows = if left > 0 { db::optimizations::pending(&mut tx, left + 1).await? } else { Vec::new() };
        capped |= rows.len() as i64 > left || (left == 0 && db::optimizations::pending_count(&mut tx).await? > 0);
        let recent = db::optimizations::recent_counts(&mut tx, 24).await?;
        tx.commit().await?;
        rows.truncate(left as usize);
        left -= rows.len() as i64;
        if !rows.is_empty() {
            sections.push((*org, name.clone(), rows));
        }
        if recent.iter().any(|(s, n)| COUNTED.contains(&s.as_str()) && *n > 0) {
            counts.push((*org, name.clone(), recent.into_iter().collect()));
        }
    }
    sections.sort_by_key(|(_, _, rows)| std::cmp::Reverse(rows.first().map(|r| r.change.created_at)));
    let now: DateTime<Utc> = Utc::now();
    let title = match only.and_then(|o| orgs.iter().find(|(x, _, _)| *x == o)) {
        Some((_, name, _)) => format!("Approval queue: {name}"),
        None => "Approval queue".to_string(),
    };
    Ok(layout(&title, Some(session), html! {
        @if let Some(n) = notice { (n) }
        p.hint {
            "The optimizer's changes waiting for a person (proposed, not expired), newest first. "
            "Approving or rejecting here is what the org's admin does with "
            code { "POST /v1/optimizations/{id}/approve" } " or " code { "/reject" } ", recorded as you."
        }
        @if only.is_some() { p { a href="/console/approvals" { "All orgs" } } }
        @if capped { p.notice role="status" { "Showing the newest " (MAX_PENDING_SHOWN) " changes only." } }
        @for (org, name, rows) in &sections {
            section.org-queue data-org=(org) {
                h2 { a href={ "/console/orgs/" (org) } { (name) } " " span.hint { "(" (rows.len()) ")" } }
                div.scroll {
                    table {
                        thead { tr { th { "Campaign" } th { "Change" } th { "Before → after" } th { "Rationale" } th { "Source" } th { "Age" } th { "Expires" } th { "Review" } } }
                        tbody {
                            @for r in rows {
                                @let c = &r.change;
                                tr.change data-change=(c.id) {
                                    td { (r.campaign_name) }
                                    td { strong { (c.optimization_type) } br; (c.summary) }
                                    td.diff { (before_after(&c.changes)) }
                                    td.rationale { (long_text(&c.rationale)) }
                                    td { (c.source) }
                                    td { time datetime=(c.created_at.to_rfc3339()) title=(c.created_at.format("%Y-%m-%d %H:%M UTC")) { (span((now - c.created_at).num_seconds())) } }
                                    td { time datetime=(c.expires_at.to_rfc3339()) title=(c.expires_at.format("%Y-%m-%d %H:%M UTC")) { "in " (span((c.expires_at - now).num_seconds())) } }
                                    td { div.actions {
                                        a.button.approve href={ "/console/orgs/" (org) "/approvals/" (c.id) "/confirm?action=approve" } aria-label={ "Approve " (c.summary) } { "Approve…" }
                                        a.button.reject href={ "/console/orgs/" (org) "/approvals/" (c.id) "/confirm?action=reject" } aria-label={ "Reject " (c.summary) } { "Reject…" }
                                    } }
                                }
                            }
                        }
                    }
                }
            }
        }
        @if sections.is_empty() { p.empty { "No changes are waiting for approval." } }
        h2 { "The last 24 hours" }
        p.hint { "Changes per org by the state they entered in the last 24 hours." }
        div.scroll {
            table.recent {
                thead { tr { th { "Org" } @for s in COUNTED { th { (s) } } } }
                tbody {
                    @for (org, name, by) in &counts {
                        tr data-org=(org) {
                            td { a href={ "/console/orgs/" (org) } { (name) } }
                            @for s in COUNTED { td class={ "num " (s) } { (by.get(s).copied().unwrap_or(0)) } }
                        }
                    }
                }
            }
        }
        @if counts.is_empty() { p { "No changes in the last 24 hours." } }
    }))
}

/// The confirmation step before approving or rejecting a change.
async fn approval_confirm(call: &Call<'_>, session: &Session) -> Result<Markup, ApiError> {
    let state = call.state;
    let org = super::uuid(call, "org_id")?;
    let id = super::uuid(call, "optimization_id")?;
    let approve = match call.query_param("action") {
        Some("approve") => true,
        Some("reject") => false,
        _ => return Err(ApiError::invalid("action", "must be approve or reject")),
    };
    let (_, name, _) = db::orgs::list(&state.pool).await?.into_iter().find(|(o, _, _)| *o == org).ok_or_else(ApiError::not_found)?;
    let mut tx = db::begin_tenant(&state.pool, org, Role::SuperAdmin.into()).await?;
    let c = db::optimizations::get(&mut tx, id, false).await?.ok_or_else(ApiError::not_found)?;
    let campaign = db::campaigns::campaign(&mut tx, c.campaign_id, false).await?;
    tx.commit().await?;
    let what = if approve { "Approve" } else { "Reject" };
    let open = c.status == "proposed" && !c.expired;
    Ok(layout(&format!("{what} this change?"), Some(session), html! {
        dl {
            dt { "Org" } dd { a href={ "/console/orgs/" (org) } { (name) } }
            dt { "Campaign" } dd { (campaign.map(|c| c.name).unwrap_or_default()) }
            dt { "Change" } dd { (c.optimization_type) ": " (c.summary) }
            dt { "Source" } dd { (c.source) }
            dt { "Status" } dd.status { (c.status) @if c.expired && c.status == "proposed" { " (expired)" } }
        }
        div.diff { (before_after(&c.changes)) }
        h2 { "Rationale" }
        p { (long_text(&c.rationale)) }
        @if open {
            @if approve {
                p { "Approving applies it now: a new sequence version (or the campaign's status) is written and sent to the provider. Your token is recorded as the reviewer." }
            }
            form.stack method="post" action={ "/console/orgs/" (org) "/approvals/" (c.id) "/" (if approve { "approve" } else { "reject" }) } {
                input type="hidden" name="csrf" value=(session.csrf);
                @if !approve {
                    label for="reason" { "Reason (optional, kept with the change)" }
                    textarea #reason name="reason" maxlength="500" rows="3" {}
                }
                button type="submit" { (what) }
            }
        } @else {
            p.notice role="status" { "This change is " (c.status) @if c.expired && c.status == "proposed" { " and expired" } ": there is nothing to review." }
        }
        p { a href={ "/console/approvals?org=" (org) } { "Back to the queue" } }
    }))
}
