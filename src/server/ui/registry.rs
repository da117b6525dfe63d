//! The registry's pages: the model list (search and pages), one model, one version, and the
//! confirm pages of the deletes. Reads only; the forms on them post to [`super::forms`].

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use maud::{html, Markup};
use serde::Deserialize;

use super::files::{self, Field, ModelFiles};
use super::markdown;
use super::page::{
    alias_chip, describe, error_page, model_url, or_dash, query_enc, stage_badge, time, time_short, version_url, Ctx,
    Page,
};
use crate::registry::{ModelVersion, RegisteredModel, Stage, MAX_DESCRIPTION_CHARS};
use crate::server::state::{blocking, RegistryState};

const PAGE_SIZE: usize = 25;
const PAGE_SIZE_LIMIT: usize = 200;

/// A version's files, as `model-versions/get-download-uri` answers (see `registry_api`).
fn download_uri(mv: &ModelVersion) -> &str {
    mv.download_location()
}

// -------------------------------------------------------------------- the model list

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct ListQuery {
    filter: String,
    page_token: String,
    per_page: String,
}

pub async fn models_page(State(st): State<RegistryState>, ctx: Ctx, Query(q): Query<ListQuery>) -> Response {
    let per_page = q.per_page.parse::<usize>().unwrap_or(PAGE_SIZE).clamp(1, PAGE_SIZE_LIMIT);
    let (filter, token) = (q.filter.clone(), q.page_token.clone());
    // Prompts are registered models too (MLflow's prompt registry); the model list leaves them
    // out, as MLflow's client and UI do.
    let filter = if filter.trim().is_empty() {
        crate::registry::NOT_A_PROMPT.to_string()
    } else {
        format!("{filter} AND {}", crate::registry::NOT_A_PROMPT)
    };
    let found = blocking(move || {
        let token = (!token.is_empty()).then_some(token.as_str());
        Ok(st.store.search_registered_models(&filter, per_page, &[], token)?)
    })
    .await;
    let (status, models, next, error) = match found {
        Ok(page) => (StatusCode::OK, page.items, page.next_page_token, None),
        Err(e) => {
            let (status, message) = describe(&e);
            (status, Vec::new(), None, Some(message))
        }
    };
    let page_link = |token: Option<&str>| {
        let mut params = Vec::new();
        if !q.filter.is_empty() {
            params.push(format!("filter={}", query_enc(&q.filter)));
        }
        if per_page != PAGE_SIZE {
            params.push(format!("per_page={per_page}"));
        }
        if let Some(t) = token {
            params.push(format!("page_token={}", query_enc(t)));
        }
        if params.is_empty() {
            "/".to_string()
        } else {
            format!("/?{}", params.join("&"))
        }
    };
    let body = html! {
        div.titlebar {
            h1 { "Registered models" }
            a.button href="#create" { "New model" }
        }
        form.search method="get" action="/" role="search" {
            label.sr-only for="filter" { "Filter" }
            input #filter type="search" name="filter" value=(q.filter)
                placeholder="name LIKE 'iris%'   ·   tags.team = 'risk'" autocomplete="off" spellcheck="false";
            button type="submit" { "Search" }
            @if !q.filter.is_empty() { a.button.secondary href="/" { "Clear" } }
        }
        details.help {
            summary { "Filter syntax" }
            p { "MLflow's search grammar: clauses joined with " code { "AND" } "." }
            ul {
                li { code { "name = 'iris'" } " · " code { "name LIKE 'iris%'" } " (case-sensitive) · " code { "name ILIKE '%IRIS%'" } }
                li { code { "tags.team = 'risk'" } " · " code { "tags.owner != 'bob'" } }
            }
        }
        @if let Some(message) = &error {
            p.flash.error role="alert" { (message) }
        }
        @if error.is_none() {
            @if models.is_empty() {
                p.empty {
                    @if q.filter.is_empty() && q.page_token.is_empty() { "No registered models yet." }
                    @else { "No model matches this filter." }
                }
            } @else {
                div.table-wrap {
                    table.list {
                        thead { tr { th { "Name" } th { "Latest versions" } th { "Aliases" } th { "Last updated" } } }
                        tbody {
                            @for m in &models { (model_row(m)) }
                        }
                    }
                }
            }
            nav.pager aria-label="Pages" {
                @if !q.page_token.is_empty() { a.button.secondary href=(page_link(None)) { "← First page" } }
                @if let Some(t) = &next { a.button.secondary.next href=(page_link(Some(t))) rel="next" { "Next page →" } }
            }
        }
        section.card #create {
            h2 { "Create a registered model" }
            form.stack method="post" action="/models" {
                label { "Name" input type="text" name="name" required maxlength="256" autocomplete="off"; }
                label { "Description " span.muted { "(Markdown)" } textarea name="description" rows="3" maxlength=(MAX_DESCRIPTION_CHARS) {} }
                div.actions { button type="submit" { "Create model" } }
            }
            p.muted.small {
                "Versions are registered from model files with "
                code { "regserve models register PATH --name NAME" } " or the MLflow client "
                code { "mlflow.register_model(...)" } "."
            }
        }
    };
    Page::new("Registered models", body).status(status).render(&ctx)
}

fn model_row(m: &RegisteredModel) -> Markup {
    let mut latest: Vec<&ModelVersion> = m.latest_versions.iter().collect();
    latest.sort_by_key(|v| stage_order(v.current_stage));
    html! {
        tr {
            td data-label="Name" { a.strong href=(model_url(&m.name)) { (m.name) } }
            td data-label="Latest" {
                @for v in &latest {
                    a.version-tag href=(version_url(&m.name, v.version)) { (stage_badge(v.current_stage)) " v" (v.version) }
                }
                @if latest.is_empty() { span.muted { "no versions" } }
            }
            td data-label="Aliases" {
                @for a in &m.aliases { (alias_chip(&m.name, &a.alias, Some(a.version))) }
                @if m.aliases.is_empty() { span.muted { "—" } }
            }
            td data-label="Last updated" { (time_short(m.last_updated_timestamp)) }
        }
    }
}

fn stage_order(s: Stage) -> u8 {
    match s {
        Stage::Production => 0,
        Stage::Staging => 1,
        Stage::None => 2,
        Stage::Archived => 3,
    }
}

// -------------------------------------------------------------------- one model

pub async fn model_page(State(st): State<RegistryState>, ctx: Ctx, Path(name): Path<String>) -> Response {
    let n = name.clone();
    let found = blocking(move || {
        let model = st.store.get_registered_model(&n)?;
        let versions = st.store.list_model_versions(&n)?;
        // Rendering is bounded but CPU work: here on the blocking pool, not in the page below.
        let rendered = markdown::render(&model.description);
        Ok((model, versions, rendered))
    })
    .await;
    let (model, versions, rendered) = match found {
        Ok(x) => x,
        Err(e) => {
            let (status, message) = describe(&e);
            return error_page(&ctx, status, &message);
        }
    };
    let base = model_url(&model.name);
    let body = html! {
        div.titlebar {
            h1 { (model.name) }
            div.meta {
                "Created " (time(model.creation_timestamp)) " · last updated " (time(model.last_updated_timestamp))
            }
        }
        div.cols {
            div.main-col {
                section.card {
                    h2 { "Description" }
                    (description_block(&model.description, &rendered, &format!("{base}/description")))
                }
                section.card {
                    h2 { "Versions " span.count { (versions.len()) } }
                    @if versions.is_empty() {
                        p.empty { "No versions yet. Register one with " code { "regserve models register PATH --name " (model.name) } "." }
                    } @else {
                        div.table-wrap {
                            table.list {
                                thead { tr { th { "Version" } th { "Stage" } th { "Aliases" } th { "Source" } th { "Run ID" } th { "Created" } } }
                                tbody {
                                    @for v in &versions {
                                        tr {
                                            td data-label="Version" {
                                                a.strong.nowrap href=(version_url(&model.name, v.version)) { "Version " (v.version) }
                                                @if v.status != crate::registry::VersionStatus::Ready {
                                                    " " span.badge.status-warn title=(v.status_message) { (v.status.as_str()) }
                                                }
                                            }
                                            td data-label="Stage" { (stage_badge(v.current_stage)) }
                                            td data-label="Aliases" {
                                                @for a in &v.aliases { (alias_chip(&model.name, a, None)) }
                                                @if v.aliases.is_empty() { span.muted { "—" } }
                                            }
                                            td.mono.clip data-label="Source" title=(v.source) { (or_dash(&v.source)) }
                                            td.mono.clip data-label="Run ID" title=(v.run_id) { (or_dash(&v.run_id)) }
                                            td data-label="Created" { (time_short(v.creation_timestamp)) }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            aside.side-col {
                section.card {
                    h2 { "Aliases" }
                    @if model.aliases.is_empty() { p.muted { "No aliases." } }
                    ul.plain {
                        @for a in &model.aliases {
                            li.row {
                                (alias_chip(&model.name, &a.alias, Some(a.version)))
                                form.inline method="post" action={ (base) "/aliases/delete" } {
                                    input type="hidden" name="alias" value=(a.alias);
                                    button.link.danger type="submit" aria-label={ "Delete alias " (a.alias) } { "Remove" }
                                }
                            }
                        }
                    }
                    @if !versions.is_empty() {
                        form.stack method="post" action={ (base) "/aliases" } {
                            div.two {
                                label { "Alias" input type="text" name="alias" required autocomplete="off" placeholder="champion"; }
                                label { "Version"
                                    select name="version" {
                                        @for v in &versions { option value=(v.version) { (v.version) } }
                                    }
                                }
                            }
                            div.actions { button type="submit" { "Set alias" } }
                        }
                    }
                }
                section.card {
                    h2 { "Tags" }
                    (tags_block(model.tags.iter().map(|t| (t.key.as_str(), t.value.as_str())), &format!("{base}/tags")))
                }
                section.card {
                    h2 { "Manage" }
                    details {
                        summary { "Rename" }
                        form.stack method="post" action={ (base) "/rename" } {
                            label { "New name" input type="text" name="new_name" required value=(model.name) maxlength="256"; }
                            div.actions { button type="submit" { "Rename" } }
                        }
                    }
                    p { a.button.danger href={ (base) "/delete" } { "Delete model…" } }
                }
            }
        }
    };
    Page::new(model.name.clone(), body).crumb("Models", "/").render(&ctx)
}

/// A description, already rendered from Markdown, with its edit form (opened by a
/// `<details>`, no script).
fn description_block(description: &str, rendered: &Markup, action: &str) -> Markup {
    html! {
        @if description.trim().is_empty() {
            p.muted { "No description." }
        } @else {
            div.markdown { (rendered) }
        }
        details.edit {
            summary { "Edit description" }
            form.stack method="post" action=(action) {
                label.sr-only for="description" { "Description" }
                textarea #description name="description" rows="8" maxlength=(MAX_DESCRIPTION_CHARS) { (description) }
                div.actions {
                    button type="submit" { "Save description" }
                    span.muted.small { "Markdown: headings, lists, links, code, tables." }
                }
            }
        }
    }
}

/// A tag table with a remove button per tag and a set-tag form.
fn tags_block<'a>(tags: impl Iterator<Item = (&'a str, &'a str)>, action: &str) -> Markup {
    let tags: Vec<_> = tags.collect();
    html! {
        @if tags.is_empty() {
            p.muted { "No tags." }
        } @else {
            table.kv {
                tbody {
                    @for (k, v) in &tags {
                        tr {
                            th.mono scope="row" { (k) }
                            td.mono { (v) }
                            td.narrow {
                                form.inline method="post" action={ (action) "/delete" } {
                                    input type="hidden" name="key" value=(k);
                                    button.link.danger type="submit" aria-label={ "Delete tag " (k) } { "Remove" }
                                }
                            }
                        }
                    }
                }
            }
        }
        form.stack method="post" action=(action) {
            div.two {
                label { "Key" input type="text" name="key" required autocomplete="off"; }
                label { "Value" input type="text" name="value" autocomplete="off"; }
            }
            div.actions { button type="submit" { "Set tag" } }
        }
    }
}

// -------------------------------------------------------------------- one version

pub async fn version_page(
    State(st): State<RegistryState>,
    ctx: Ctx,
    Path((name, version)): Path<(String, String)>,
) -> Response {
    let version = match super::parse_version(&version) {
        Ok(v) => v,
        Err((status, message)) => return error_page(&ctx, status, &message),
    };
    let n = name.clone();
    let found = blocking(move || {
        let mv = st.store.get_model_version(&n, version)?;
        let files = files::read(&st.artifacts, download_uri(&mv));
        let rendered = markdown::render(&mv.description);
        Ok((mv, files, rendered))
    })
    .await;
    let (mv, files, rendered) = match found {
        Ok(x) => x,
        Err(e) => {
            let (status, message) = describe(&e);
            return error_page(&ctx, status, &message);
        }
    };
    let base = version_url(&mv.name, mv.version);
    let body = html! {
        div.titlebar {
            h1 { (mv.name) " " span.light { "version " (mv.version) } }
            div.meta {
                (stage_badge(mv.current_stage))
                @for a in &mv.aliases { " " (alias_chip(&mv.name, a, None)) }
            }
        }
        div.cols {
            div.main-col {
                section.card {
                    h2 { "Details" }
                    dl.details {
                        dt { "Stage" } dd { (stage_badge(mv.current_stage)) }
                        dt { "Status" } dd {
                            (mv.status.as_str())
                            @if !mv.status_message.is_empty() { div.muted.small { (mv.status_message) } }
                        }
                        dt { "Aliases" } dd {
                            @for a in &mv.aliases { (alias_chip(&mv.name, a, None)) " " }
                            @if mv.aliases.is_empty() { span.muted { "—" } }
                        }
                        dt { "Created" } dd { (time(mv.creation_timestamp)) }
                        dt { "Last updated" } dd { (time(mv.last_updated_timestamp)) }
                        @if !mv.user_id.is_empty() { dt { "User" } dd { (mv.user_id) } }
                    }
                }
                section.card {
                    h2 { "Description" }
                    (description_block(&mv.description, &rendered, &format!("{base}/description")))
                }
                section.card {
                    h2 { "Lineage" }
                    dl.details {
                        dt { "Run ID" } dd.mono { (or_dash(&mv.run_id)) }
                        @if !mv.run_link.is_empty() { dt { "Run link" } dd.mono.break { (mv.run_link) } }
                        dt { "Source" } dd.mono.break { (or_dash(&mv.source)) }
                        dt { "Download URI" } dd.mono.break { (download_uri(&mv)) }
                        @if !mv.model_id.is_empty() { dt { "Logged model" } dd.mono { (mv.model_id) } }
                    }
                }
                section.card {
                    h2 { "Signature" }
                    (signature_block(&files))
                }
                section.card {
                    h2 { "Input example" }
                    @match &files {
                        Ok(ModelFiles { example: Some(ex), .. }) => pre.example { code { (ex) } },
                        _ => p.muted { "Not available." },
                    }
                }
            }
            aside.side-col {
                section.card {
                    h2 { "Stage" }
                    form.stack method="post" action={ (base) "/stage" } {
                        label { "Transition to"
                            select name="stage" {
                                @for s in Stage::ALL {
                                    option value=(s.as_str()) selected[s == mv.current_stage] { (s.as_str()) }
                                }
                            }
                        }
                        label.check {
                            input type="checkbox" name="archive_existing" value="true";
                            " Archive existing versions in that stage"
                        }
                        div.actions { button type="submit" { "Transition" } }
                    }
                }
                section.card {
                    h2 { "Aliases" }
                    form.stack method="post" action={ (model_url(&mv.name)) "/aliases" } {
                        input type="hidden" name="version" value=(mv.version);
                        label { "Point an alias at this version" input type="text" name="alias" required autocomplete="off" placeholder="champion"; }
                        div.actions { button type="submit" { "Set alias" } }
                    }
                    p.small { a href=(model_url(&mv.name)) { "Manage the model's aliases" } }
                }
                section.card {
                    h2 { "Tags" }
                    (tags_block(mv.tags.iter().map(|t| (t.key.as_str(), t.value.as_str())), &format!("{base}/tags")))
                }
                section.card {
                    h2 { "Manage" }
                    p { a.button.danger href={ (base) "/delete" } { "Delete version…" } }
                }
            }
        }
    };
    Page::new(format!("{} v{}", mv.name, mv.version), body)
        .crumb("Models", "/")
        .crumb(mv.name.clone(), model_url(&mv.name))
        .render(&ctx)
}

fn signature_block(files: &Result<ModelFiles, String>) -> Markup {
    match files {
        Err(why) => html! { p.muted { "Not available: " (why) "." } },
        Ok(f) if f.inputs.is_none() && f.outputs.is_none() => html! {
            p.muted { "Not available: the MLmodel has no signature." }
        },
        Ok(f) => html! {
            div.sig {
                div { h3 { "Inputs" } (fields_table(f.inputs.as_deref())) }
                div { h3 { "Outputs" } (fields_table(f.outputs.as_deref())) }
            }
            @if !f.flavors.is_empty() {
                p.muted.small { "Flavors: " (f.flavors.join(", ")) }
            }
        },
    }
}

fn fields_table(fields: Option<&[Field]>) -> Markup {
    html! {
        @match fields {
            None | Some([]) => p.muted { "None." },
            Some(fields) => table.fields {
                thead { tr { th { "Name" } th { "Type" } th { "Shape" } } }
                tbody {
                    @for f in fields {
                        tr {
                            td.mono { (or_dash(&f.name)) @if f.optional { " " span.muted.small { "(optional)" } } }
                            td.mono { (f.ty) }
                            td.mono { (or_dash(&f.shape)) }
                        }
                    }
                }
            },
        }
    }
}

// -------------------------------------------------------------------- confirm pages

pub async fn confirm_delete_model(State(st): State<RegistryState>, ctx: Ctx, Path(name): Path<String>) -> Response {
    let n = name.clone();
    let found = blocking(move || Ok(st.store.list_model_versions(&n)?.len())).await;
    let count = match found {
        Ok(c) => c,
        Err(e) => {
            let (status, message) = describe(&e);
            return error_page(&ctx, status, &message);
        }
    };
    let body = html! {
        section.card.confirm {
            h1 { "Delete registered model " q { (name) } "?" }
            p {
                "This deletes the model, its " strong { (count) " version" @if count != 1 { "s" } }
                ", their tags and aliases, and the files regserve copied for them. It cannot be undone."
            }
            form.actions method="post" action={ (model_url(&name)) "/delete" } {
                button.danger type="submit" { "Delete " (name) }
                a.button.secondary href=(model_url(&name)) { "Cancel" }
            }
        }
    };
    Page::new(format!("Delete {name}?"), body).crumb("Models", "/").crumb(name.clone(), model_url(&name)).render(&ctx)
}

pub async fn confirm_delete_version(
    State(st): State<RegistryState>,
    ctx: Ctx,
    Path((name, version)): Path<(String, String)>,
) -> Response {
    let version = match super::parse_version(&version) {
        Ok(v) => v,
        Err((status, message)) => return error_page(&ctx, status, &message),
    };
    let n = name.clone();
    let mv = match blocking(move || Ok(st.store.get_model_version(&n, version)?)).await {
        Ok(mv) => mv,
        Err(e) => {
            let (status, message) = describe(&e);
            return error_page(&ctx, status, &message);
        }
    };
    let body = html! {
        section.card.confirm {
            h1 { "Delete version " (mv.version) " of " q { (mv.name) } "?" }
            p {
                "Version " (mv.version) " is in stage " (stage_badge(mv.current_stage))
                @if !mv.aliases.is_empty() { " and aliases " @for a in &mv.aliases { (alias_chip(&mv.name, a, None)) " " } "point at it" }
                ". Servers following it move to another version or stop finding one. Its number is never reused. It cannot be undone."
            }
            form.actions method="post" action={ (version_url(&mv.name, mv.version)) "/delete" } {
                button.danger type="submit" { "Delete version " (mv.version) }
                a.button.secondary href=(version_url(&mv.name, mv.version)) { "Cancel" }
            }
        }
    };
    Page::new(format!("Delete {} v{}?", mv.name, mv.version), body)
        .crumb("Models", "/")
        .crumb(mv.name.clone(), model_url(&mv.name))
        .crumb(format!("Version {}", mv.version), version_url(&mv.name, mv.version))
        .render(&ctx)
}
