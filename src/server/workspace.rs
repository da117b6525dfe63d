//! The `X-MLFLOW-WORKSPACE` header of MLflow 3's workspaces, on every `/api` and `/ajax-api`
//! route: regserve has one workspace, MLflow's `default`.
//!
//! MLflow 3.17 without `MLFLOW_ENABLE_WORKSPACES` (`server/workspace_helpers.py`,
//! `resolve_workspace_for_request_if_enabled`) refuses any non-blank header, `default`
//! included, with `FEATURE_DISABLED` — which it answers as HTTP 500, so its client retries
//! before giving up — and exempts `server-info`. Here a blank header or `default` (trimmed, as
//! MLflow's `_normalize_workspace` does) names the only workspace there is and passes; any
//! other name is a 400 `FEATURE_DISABLED` that says what to do; `server-info` is exempt too.

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::error::ApiError;

/// The header MLflow's client sends after `mlflow.set_workspace(...)`.
pub const WORKSPACE_HEADER: &str = "x-mlflow-workspace";
/// MLflow's `DEFAULT_WORKSPACE_NAME`.
pub const DEFAULT_WORKSPACE: &str = "default";

/// Middleware: refuse a request to the REST APIs that names a workspace other than the default.
pub async fn check_workspace(req: Request, next: Next) -> Response {
    let path = req.uri().path();
    let api = path.starts_with("/api/") || path.starts_with("/ajax-api/");
    if api && !path.trim_end_matches('/').ends_with("/mlflow/server-info") {
        if let Err(e) = check(req.headers().get_all(WORKSPACE_HEADER).iter().map(|v| v.to_str())) {
            return e.into_response();
        }
    }
    next.run(req).await
}

/// Every value of the header (normally one) must be blank or the default workspace.
fn check<'a>(values: impl Iterator<Item = Result<&'a str, axum::http::header::ToStrError>>) -> Result<(), ApiError> {
    for value in values {
        let name = value
            .map_err(|_| ApiError::WorkspaceDisabled("The X-MLFLOW-WORKSPACE header is not valid text.".to_string()))?;
        let name = name.trim();
        if !name.is_empty() && name != DEFAULT_WORKSPACE {
            let shown: String = name.chars().take(100).collect();
            return Err(ApiError::WorkspaceDisabled(format!(
                "Workspace '{shown}' is not available: workspaces are not enabled on this server, which has \
                 only the '{DEFAULT_WORKSPACE}' workspace. Unset X-MLFLOW-WORKSPACE (mlflow.set_workspace(None)) \
                 or set it to '{DEFAULT_WORKSPACE}'."
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(values: &[&str]) -> Result<(), String> {
        check(values.iter().map(|v| Ok(*v))).map_err(|e| e.to_string())
    }

    #[test]
    fn default_or_blank_passes_and_any_other_name_is_refused() {
        assert!(run(&[]).is_ok());
        assert!(run(&[""]).is_ok());
        assert!(run(&["  "]).is_ok());
        assert!(run(&["default"]).is_ok());
        assert!(run(&[" default "]).is_ok());
        let e = run(&["team-a"]).unwrap_err();
        assert!(e.starts_with("Workspace 'team-a' is not available: workspaces are not enabled"), "{e}");
        assert!(run(&["Default"]).is_err());
        assert!(run(&["default", "team-a"]).is_err());
        let (status, code) = ApiError::WorkspaceDisabled(String::new()).classify();
        assert_eq!((status.as_u16(), code), (400, "FEATURE_DISABLED"));
    }
}
