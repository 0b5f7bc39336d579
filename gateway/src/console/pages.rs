//! The console's pages, rendered with maud (every interpolated value is HTML-escaped).
//! Plain links and forms only: no script, so the Content-Security-Policy allows none.

use std::collections::BTreeMap;

use maud::{html, Markup, DOCTYPE};
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
