//! `GET /` on `regserve serve`: each served URI with the version in service, its stage and
//! aliases (as resolved when it was loaded), load and check times, the last swap or error, and
//! request counts with recent latency. Refreshes itself every few seconds (meta refresh).

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use maud::{html, Markup};

use super::page::{ago, html_response, now_ms, shell, stage_badge, time};
use crate::manager::{Slot, SlotStatus};
use crate::server::scoring::ScoringState;

const REFRESH_SECONDS: u32 = 2;

pub async fn status_page(State(st): State<ScoringState>) -> Response {
    let now = now_ms();
    let manager = &st.manager;
    let default = manager.default_slot().cloned();
    let (state, class) = if manager.is_draining() {
        ("Draining", "badge status-warn")
    } else if manager.all_ready() {
        ("Ready", "badge status-ok")
    } else {
        ("Loading", "badge status-warn")
    };
    let nav = html! {
        nav.nav {
            a href="/health" { "Health" }
            a href="/metrics" { "Metrics" }
            a href="/v2" { "V2" }
        }
    };
    let main = html! {
        div.titlebar {
            h1 { "Served models " span class=(class) { (state) } }
            div.meta {
                "Registry: " span.mono { (manager.source_description()) }
                " · updated " (time(now)) " · refreshes every " (REFRESH_SECONDS) " s"
            }
        }
        div.slots {
            @for slot in manager.slots() {
                (slot_card(slot, default.as_ref().is_some_and(|d| Arc::ptr_eq(d, slot)), now))
            }
        }
    };
    let page = shell("Served models", Some(REFRESH_SECONDS), nav, main);
    html_response(StatusCode::OK, page)
}

fn slot_card(slot: &Slot, is_default: bool, now: i64) -> Markup {
    let s: SlotStatus = slot.public_status();
    let active = slot.active();
    let r = &s.requests;
    let ms = |v: Option<f64>| v.map(|x| format!("{x:.1} ms")).unwrap_or_else(|| "—".into());
    html! {
        section.card.slot data-uri=(s.uri) {
            div.slot-head {
                h2.mono { (s.uri) }
                @if is_default { span.badge.stage-none title="Also answers POST /invocations" { "default" } }
            }
            div.slot-version {
                @match &active {
                    Some(a) => {
                        span.big data-version=(a.version.version) { "v" (a.version.version) }
                        span { (stage_badge(a.version.current_stage)) }
                        @for alias in &a.version.aliases { span.chip { "@" (alias) } }
                        span.muted.small { "of " (a.version.name) }
                    }
                    None => {
                        span.big.muted { "not loaded" }
                    }
                }
            }
            dl.details {
                dt { "Loaded" } dd {
                    @match s.loaded_at_ms {
                        Some(t) => { (time(t)) " " span.muted { "(" (ago(t, now)) @if let Some(l) = s.load_seconds { ", took " (format!("{l:.2}")) " s" } ")" } }
                        None => span.muted { "—" },
                    }
                }
                dt { "Last check" } dd {
                    @match s.last_check_ms { Some(t) => { (ago(t, now)) }, None => span.muted { "—" } }
                }
                dt { "Swaps" } dd {
                    (s.swaps)
                    @if let (Some(t), Some(prev), Some(v)) = (s.last_swap_ms, s.previous_version, s.version) {
                        span.muted { " · last: v" (prev) " → v" (v) ", " (ago(t, now)) }
                    }
                }
                dt { "Requests" } dd {
                    strong data-requests=(r.total) { (r.total) }
                    @if r.client_errors > 0 || r.server_errors > 0 {
                        span.muted { " · " (r.client_errors) " 4xx · " (r.server_errors) " 5xx" }
                    }
                    @if let Some(t) = r.last_request_ms { span.muted { " · last " (ago(t, now)) } }
                }
                dt { "Latency" } dd {
                    @if r.recent == 0 { span.muted { "no requests yet" } }
                    @else { "p50 " (ms(r.p50_ms)) " · p95 " (ms(r.p95_ms)) " · max " (ms(r.max_ms)) span.muted { " (last " (r.recent) ")" } }
                }
            }
            @if let Some(e) = &s.last_error {
                p.flash.error role="alert" { "Last check failed: " (e) }
            }
        }
    }
}
